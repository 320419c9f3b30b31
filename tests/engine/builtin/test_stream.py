import itertools
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dreamserve.engine.builtin.data import Pools, build_pools, sample_batch
from dreamserve.engine.builtin.stream import KINDS, batches, draw


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> Pools:
    cache: Path = tmp_path_factory.mktemp("cache")
    return build_pools(7, 40, 8, 6, cache, log=lambda _: None)


def test_a_drawn_batch_has_renders_for_the_target_and_every_input(pools: Pools) -> None:
    for kind_index, kind in enumerate(KINDS):
        mix = tuple(1.0 if k == kind_index else 0.0 for k in range(len(KINDS)))
        b = draw(pools, mix, (3, 2, 2, 3, 3), random.Random(kind_index))
        assert b.kind == kind and len(b.texts) == b.target.shape[0]
        assert all(x.shape == b.target.shape for x in b.inputs)
        assert (len(b.inputs) > 0) == (kind in ("edit", "ref"))
        assert float(b.target.min()) >= -1.0 and float(b.target.max()) <= 1.0


def test_inline_stream_is_determined_by_its_seed(pools: Pools) -> None:
    def texts() -> list[list[str]]:
        stream = batches(pools, (1, 1, 1, 1, 1), (2, 2, 2, 2, 2), 5, 0)
        return [b.texts for b in itertools.islice(stream, 3)]

    assert texts() == texts()


@pytest.mark.slow
def test_worker_processes_render_ahead(pools: Pools) -> None:
    stream = batches(pools, (1, 1, 1, 1, 1), (2, 2, 2, 2, 2), 5, workers=2)
    got = list(itertools.islice(stream, 4))
    assert len(got) == 4 and all(isinstance(b.target, torch.Tensor) for b in got)
    assert all(b.texts[0] in pools.index for b in got)


def test_shape_batches_hold_one_object_not_said_to_be_small(pools: Pools) -> None:
    b = draw(pools, (0, 0, 0, 1, 0), (2, 2, 2, 8, 2), random.Random(3))
    specs = {s.text: s for s in pools.t2i}
    assert b.kind == "shape" and all(t in specs for t in b.texts)
    assert all(specs[t].kind == "single" and specs[t].objs[0].size != "small" for t in b.texts)
    assert 0 < len(pools.shapes) < len(pools.t2i)


def test_a_shape_focus_keeps_only_its_shapes_in_shape_batches(pools: Pools) -> None:
    focused = replace(pools, focus=("circle", "flower"))
    assert focused.shapes and {s.objs[0].shape for s in focused.shapes} <= {"circle", "flower"}
    assert set(focused.shapes) < set(pools.shapes)
    b = draw(focused, (0, 0, 0, 1, 0), (2, 2, 2, 8, 2), random.Random(3))
    specs = {s.text: s for s in pools.t2i}
    assert all(specs[t].objs[0].shape in ("circle", "flower") for t in b.texts)


def test_the_small_pool_holds_captions_with_a_small_object_of_a_focus_shape(pools: Pools) -> None:
    focused = replace(pools, small_focus=("sun", "flower"))
    assert focused.small and set(focused.small) <= set(pools.small) < set(pools.t2i)
    for spec in focused.small:
        assert any(o.size == "small" and o.shape in ("sun", "flower") for o in spec.objs)
    b = sample_batch(focused, "small", 4, random.Random(2))
    specs = {s.text: s for s in focused.small}
    assert len(b.target) == 4 and all(t in specs for t in b.texts)


def test_compose_batches_hold_only_relations_and_counts(pools: Pools) -> None:
    b = draw(pools, (0, 0, 0, 0, 1), (2, 2, 2, 2, 8), random.Random(4))
    specs = {s.text: s for s in pools.t2i}
    assert b.kind == "compose" and all(specs[t].kind in ("relation", "count") for t in b.texts)
    kinds = {s.kind for s in pools.composed}
    assert kinds == {"relation", "count"} and len(pools.composed) < len(pools.t2i)
