"""The probe's size: downsampled, rounded to the patch, never too few tokens or frames."""

import torch

from pc_compile.capture.layouts import DenseLayout, Grid, resize_video
from pc_compile.runtime.probe import probe_grid


def test_paper_factors_on_a_wan_480p_latent():
    grid = probe_grid(Grid(21, 60, 104, 1, 2, 2), (2, 4, 4), min_tokens=16)
    assert (grid.frames, grid.height, grid.width) == (10, 16, 26)


def test_small_latents_keep_a_minimum_of_tokens_per_frame():
    grid = probe_grid(Grid(9, 16, 16, 1, 2, 2), (2, 4, 4), min_tokens=16)
    assert grid.tokens_per_frame >= 16
    assert grid.height % 2 == 0 and grid.width % 2 == 0
    assert grid.frames == 4


def test_never_a_single_frame_when_the_latent_has_several():
    assert probe_grid(Grid(3, 32, 32), (4, 4, 4), min_tokens=1).frames == 2
    assert probe_grid(Grid(1, 32, 32), (2, 4, 4), min_tokens=1).frames == 1


def test_area_resize_keeps_the_mean_and_frames_first_layout_round_trips():
    video = torch.randn(1, 4, 8, 16, 16)
    small = resize_video(video, 4, 4, 4)
    assert small.shape == (1, 4, 4, 4, 4)
    torch.testing.assert_close(small.mean(), video.mean(), atol=1e-5, rtol=0)
    layout = DenseLayout("hidden_states", (1, 2, 2), frames_first=True)
    call = {"hidden_states": video.transpose(1, 2)}
    probe = layout.probe_call(call, Grid(4, 8, 8, 1, 2, 2))["hidden_states"]
    assert probe.shape == (1, 4, 4, 8, 8)  # (B, F, C, H, W)


def test_under_context_parallelism_the_degree_divides_the_probe_s_tokens():
    # The probe runs through the model's own split of the sequence over the ranks.
    def tokens(g):
        return (g.frames // g.patch_t) * (g.height // g.patch_h) * (g.width // g.patch_w)

    for grid in (Grid(3, 8, 8, 1, 2, 2), Grid(1, 4, 4, 1, 1, 1), Grid(21, 60, 104, 1, 2, 2)):
        alone = probe_grid(grid, (2, 4, 4), min_tokens=1)
        for degree in (2, 3, 4, 8):
            probe = probe_grid(grid, (2, 4, 4), min_tokens=1, multiple=degree)
            assert tokens(probe) % degree == 0, (grid, degree, probe)
            assert tokens(alone) <= tokens(probe) <= tokens(grid)
    assert probe_grid(Grid(3, 8, 8, 1, 2, 2), (2, 4, 4), 1, multiple=3).height == 6
