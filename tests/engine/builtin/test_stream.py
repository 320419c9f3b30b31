import itertools
import random
from pathlib import Path

import pytest
import torch

from dreamserve.engine.builtin.data import Pools, build_pools
from dreamserve.engine.builtin.stream import KINDS, batches, draw


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> Pools:
    cache: Path = tmp_path_factory.mktemp("cache")
    return build_pools(7, 12, 8, 6, cache, log=lambda _: None)


def test_a_drawn_batch_has_renders_for_the_target_and_every_input(pools: Pools) -> None:
    for kind_index, kind in enumerate(KINDS):
        mix = tuple(1.0 if k == kind_index else 0.0 for k in range(3))
        b = draw(pools, mix, (3, 2, 2), random.Random(kind_index))
        assert b.kind == kind and len(b.texts) == b.target.shape[0]
        assert all(x.shape == b.target.shape for x in b.inputs)
        assert (len(b.inputs) > 0) == (kind != "t2i")
        assert float(b.target.min()) >= -1.0 and float(b.target.max()) <= 1.0


def test_inline_stream_is_determined_by_its_seed(pools: Pools) -> None:
    a = [b.texts for b in itertools.islice(batches(pools, (1, 1, 1), (2, 2, 2), 5, 0), 3)]
    b = [b.texts for b in itertools.islice(batches(pools, (1, 1, 1), (2, 2, 2), 5, 0), 3)]
    assert a == b


@pytest.mark.slow
def test_worker_processes_render_ahead(pools: Pools) -> None:
    got = list(itertools.islice(batches(pools, (1, 1, 1), (2, 2, 2), 5, workers=2), 4))
    assert len(got) == 4 and all(isinstance(b.target, torch.Tensor) for b in got)
    assert all(b.texts[0] in pools.index for b in got)
