"""2D keypoints in, lifted poses out: the readers (`readers`, and `detectors` for OpenPose and
MediaPipe files, `people` choosing one person per frame), the joint layouts and their mapping to the
model's skeleton (`layouts`), the checks that stop a bad input before it becomes a silently wrong 3D
pose (`checks`), and the writers and the reader of `diffupose lift` outputs (`writers`, `results`).
Each module says what it does; this package re-exports their public names (the import path
`diffupose.keypoints.X` of the single module it was before keeps working).
"""
from .checks import (OFF_IMAGE_NORMALIZED, UNRELIABLE_WEAK_FRACTION, InputPlan, PreparedChunk,  # noqa: F401
                     _frames_text, _hop_distances, check_keypoints, iter_chunks, off_image, prepare_chunk,
                     resolve_layout, sample_poses, screen_normalize, stand_in_missing, unit_square_to_pixels,
                     unusable_joints)
from .detectors import OPENPOSE_SUFFIX, read_mediapipe_csv, read_mediapipe_json, read_openpose  # noqa: F401
from .errors import KeypointError, PathLike, one_line  # noqa: F401
from .errors import one_line as _one_line  # noqa: F401
from .layouts import (BODY25_JOINTS, COCO17_JOINTS, COCO_TO_H36M17, COCO_WHOLEBODY_JOINTS,  # noqa: F401
                      DETECTOR_TO_COCO17, LAYOUT_JOINTS, LAYOUT_MARGIN, LAYOUTS, MEDIAPIPE33_JOINTS,
                      UNIT_SQUARE_LAYOUTS, check_conversion, compare_layouts, convert_layout)
from .people import PERSON_HELP, Person, choose_people, parse_person  # noqa: F401
from .readers import Keypoints, read_keypoints  # noqa: F401
from .results import LiftOutput, npz_member_memmap, read_lift_output  # noqa: F401
from .writers import (CLIP_WRITERS, OUTPUT_FORMATS, STALE_PART_SECONDS, LiftWriter, _host_tag,  # noqa: F401
                      _pid_alive, check_output_path, output_formats, register_clip_writer,
                      remove_stale_temporaries)

__all__ = ["BODY25_JOINTS", "COCO17_JOINTS", "COCO_TO_H36M17", "COCO_WHOLEBODY_JOINTS", "InputPlan", "KeypointError",
           "Keypoints", "LAYOUTS", "LiftOutput", "LiftWriter", "MEDIAPIPE33_JOINTS", "PreparedChunk",
           "check_keypoints", "check_output_path", "choose_people", "compare_layouts", "convert_layout", "off_image",
           "parse_person", "prepare_chunk", "read_keypoints", "read_lift_output", "read_openpose",
           "remove_stale_temporaries", "resolve_layout", "screen_normalize", "stand_in_missing",
           "unit_square_to_pixels"]
