import random

from dreamserve.engine.builtin.captions import (
    count_spec,
    random_spec,
    realize,
    relation_spec,
    single_spec,
)
from dreamserve.engine.builtin.render import XS, YS, allowed_colors


def test_captions_vary_in_wording() -> None:
    rnd = random.Random(0)
    texts = {single_spec(rnd).text.split(" ")[0] for _ in range(200)}
    assert len(texts) >= 3


def test_single_scene_puts_the_object_in_its_cell() -> None:
    rnd = random.Random(1)
    for _ in range(100):
        spec = single_spec(rnd)
        scene = realize(spec, rnd)
        (o,) = scene.objects
        assert (o.shape, o.color) == (spec.objs[0].shape, spec.objs[0].color)
        assert o.color in allowed_colors(spec.background)
        if spec.objs[0].pos is not None:
            xn, yn = spec.objs[0].pos
            assert abs(o.x - XS[xn]) <= 0.06 and abs(o.y - YS[yn]) <= 0.06


def test_relation_scene_satisfies_the_relation() -> None:
    rnd = random.Random(2)
    for _ in range(100):
        spec = relation_spec(rnd)
        a, b = realize(spec, rnd).objects
        dx, dy = a.x - b.x, a.y - b.y
        assert {"above": dy < 0, "below": dy > 0, "left of": dx < 0, "right of": dx > 0}[
            spec.relation or ""
        ]
        assert spec.text.count(" a ") >= 1


def test_count_scene_has_that_many_separate_objects() -> None:
    rnd = random.Random(3)
    for _ in range(100):
        spec = count_spec(rnd)
        objs = realize(spec, rnd).objects
        assert len(objs) == spec.count
        for i, p in enumerate(objs):
            for q in objs[i + 1 :]:
                assert max(abs(p.x - q.x), abs(p.y - q.y)) > (p.size + q.size) / 2


def test_same_seed_same_specs() -> None:
    a = [random_spec(random.Random(5)).text for _ in range(3)]
    b = [random_spec(random.Random(5)).text for _ in range(3)]
    assert a == b
