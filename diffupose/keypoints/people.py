"""Several people per frame: which one is lifted.

Detectors report every person they find. The model lifts one person per frame, and which one must
stay the same person through the clip, or the 3D poses jump between people. The choice (`person`):
- None (auto): where the detections carry a track id (`track_id`; OpenPose's `person_id`), follow
  the track that is the most confident over the clip (the highest sum of its per-frame scores), the
  frames it is absent from being detector misses; without track ids, the most confident person of
  each frame;
- "best": the most confident person of each frame, track ids or not;
- an integer: the track id to follow.
A person's confidence is the detector's score where it gives one (COCO results' "score"), else the
mean of its joints' scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .errors import KeypointError

Person = Union[None, str, int]  # None (auto), "best", or a track id
PERSON_HELP = ("which person to lift where a frame has several: auto (follow the most confident track where the "
               "detections have track ids, else the most confident person per frame), best (the most confident "
               "per frame), or a track id")


@dataclass
class Candidate:
    """One detected person of one frame."""

    index: int  # where it is in the frame's list of detections
    score: float
    track: Optional[Union[int, str]] = None


def track_id(path: Path, i: int, tid: Any) -> Optional[Union[int, str]]:
    """A detection's track id (None: untracked; OpenPose writes -1 or [-1] for that)."""
    if isinstance(tid, list) and len(tid) == 1:
        tid = tid[0]
    if tid is None or tid == -1:
        return None
    if isinstance(tid, bool) or not isinstance(tid, (int, str)):
        raise KeypointError(f"{path}: entry {i}: a track id must be an integer or a string, got {tid!r}")
    return tid


def parse_person(text: Union[str, int, None]) -> Person:
    """'auto' / None -> None, 'best' -> 'best', a whole number -> that track id; else KeypointError."""
    if text is None or isinstance(text, int) and not isinstance(text, bool):
        return text
    t = str(text).strip().lower()
    if t == "auto":
        return None
    if t == "best":
        return "best"
    try:
        return int(t)
    except ValueError:
        raise KeypointError(f"--person {text!r}: expected auto, best or a track id (a whole number)") from None


def choose_people(path: Path, frames: Sequence[Sequence[Candidate]], person: Person
                  ) -> tuple[list[Optional[int]], list[str]]:
    """(for each frame the index of the chosen detection, None where there is none; notes for the user)."""
    person = parse_person(person)
    tracks: dict = {}
    for cands in frames:
        for c in cands:
            if c.track is not None:
                tracks[c.track] = tracks.get(c.track, 0.0) + c.score
    several = sum(len(c) > 1 for c in frames)
    if isinstance(person, int):
        if person not in tracks:
            have = ", ".join(str(t) for t in sorted(tracks, key=str)[:20]) or "none"
            raise KeypointError(f"{path}: no person with track id {person}; the detections' track ids: {have}")
        follow = person
    elif person is None and tracks:
        follow = max(tracks, key=lambda t: tracks[t])
    else:
        follow = None
    chosen: list[Optional[int]] = []
    for cands in frames:
        if follow is not None:
            mine = [c for c in cands if c.track == follow]
            chosen.append(max(mine, key=lambda c: c.score).index if mine else None)
        else:
            chosen.append(max(cands, key=lambda c: c.score).index if cands else None)
    notes = []
    if follow is not None and (len(tracks) > 1 or person is not None):
        present = sum(c is not None for c in chosen)
        how = "as asked" if isinstance(person, int) else "the most confident track over the clip"
        notes.append(f"{len(tracks)} tracked people: lifting track id {follow} ({how}), present in {present} of "
                     f"{len(frames)} frames; --person ID follows another, --person best the most confident per frame")
    elif several:
        notes.append(f"{several} frames have several people: kept the highest-scoring (most confident) person of "
                     "each frame")
    return chosen, notes
