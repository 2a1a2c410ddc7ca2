import pytest
import torch

from diffupose.skeleton import H36M16, H36M17, HUMANEVA15, SKELETONS, flip_pose, get_skeleton, skeleton_for_joints


@pytest.mark.parametrize("skel", list(SKELETONS.values()), ids=list(SKELETONS))
def test_structure(skel):
    J = skel.num_joints
    assert skel.parents[0] == -1 and all(0 <= p < j for j, p in enumerate(skel.parents) if j > 0)
    adj = skel.adjacency()
    assert torch.equal(adj, adj.T)
    assert int(adj.sum()) == J + 2 * (J - 1)  # self loops + both directions of each bone
    # left/right pairs name mirrored joints
    for left, right in zip(skel.joints_left, skel.joints_right):
        assert skel.joints[left].replace("l_", "r_") == skel.joints[right]


@pytest.mark.parametrize("skel", list(SKELETONS.values()), ids=list(SKELETONS))
def test_flip_is_an_involution_that_mirrors(skel):
    pose = torch.randn(4, skel.num_joints, 3)
    f = flip_pose(pose, skel)
    assert torch.equal(flip_pose(f, skel), pose)
    li, ri = skel.joints_left[0], skel.joints_right[0]
    assert torch.equal(f[:, li, 0], -pose[:, ri, 0]) and torch.equal(f[:, li, 1:], pose[:, ri, 1:])


def test_lookup_and_errors():
    assert get_skeleton("h36m17") is H36M17
    assert skeleton_for_joints(16) is H36M16 and skeleton_for_joints(15) is HUMANEVA15
    with pytest.raises(ValueError, match="unknown skeleton"):
        get_skeleton("coco")
    with pytest.raises(ValueError, match="no skeleton has 14 joints"):
        skeleton_for_joints(14)
    with pytest.raises(ValueError, match="joints"):
        flip_pose(torch.zeros(2, 16, 3), H36M17)
