import random
from collections import Counter

import torch

from dreamserve.engine.builtin.data import (
    Pools,
    make_specs,
    object_masks,
    render_batch,
    sample_batch,
)
from dreamserve.engine.builtin.render import Obj, Scene


def test_batches_are_full_even_when_an_input_count_is_rare() -> None:
    # One reference task in 100 has its input count: drawing 4x the batch from the whole pool
    # and keeping the matches used to come up empty, and crashed a training run.
    _, _, ref = make_specs(3, 0, 0, 400)
    counts = Counter(len(s.backgrounds) for s in ref)
    common, rare = counts.most_common()[0][0], counts.most_common()[-1][0]
    assert common != rare
    pool = [s for s in ref if len(s.backgrounds) == common][:99]
    pool += [next(s for s in ref if len(s.backgrounds) == rare)]
    pools = Pools([], [], pool, [], torch.zeros(0, 1, 384), torch.zeros(0), {})
    rnd = random.Random(0)
    seen = set()
    for _ in range(400):
        b = sample_batch(pools, "ref", 16, rnd)
        assert len(b.target) == len(b.texts) == 16
        assert all(len(slot) == 16 for slot in b.inputs)
        seen.add(len(b.inputs))
    assert seen == {common, rare}


def test_object_masks_cover_the_objects_and_nothing_else() -> None:
    scene = Scene("day sky", (Obj("square", "red", 0.25, 0.5, 0.3),))
    (mask,) = object_masks([scene], 9, 7)  # a 4:3 grid: 144 x 112 px
    assert mask.shape == (1, 112, 144)
    img = render_batch([scene], 9, 7)[0]
    red = (img[0] > 0.5) & (img[1] < -0.5)  # the square's pixels, drawn in red
    assert bool((mask[0][red] == 1).all()) and float(mask.mean()) < 0.15
    assert float(object_masks([Scene("white")], 8, 8).sum()) == 0.0
