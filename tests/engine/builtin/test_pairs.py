import random

from dreamserve.engine.builtin.pairs import EDIT_OPS, REF_OPS, edit_spec, realize_task, ref_spec


def test_each_edit_changes_only_what_it_says() -> None:
    rnd = random.Random(0)
    for op in EDIT_OPS:
        for _ in range(20):
            spec = edit_spec(rnd, op)
            (src,), tgt = realize_task(spec, rnd)
            if spec.op == "background":
                assert tgt.objects == src.objects and tgt.background == spec.arg != src.background
                continue
            assert tgt.background == src.background and tgt.star_seed == src.star_seed
            a = src.objects[0]
            if spec.op == "recolor":
                assert tgt.objects[0].color == spec.arg != a.color
            elif spec.op == "add":
                assert len(tgt.objects) == len(src.objects) + 1
            elif spec.op == "remove":
                assert tgt.objects == src.objects[1:]
            elif spec.op == "move":
                assert (tgt.objects[0].x, tgt.objects[0].y) != (a.x, a.y)
            elif spec.op == "resize":
                bigger = tgt.objects[0].size > a.size
                assert bigger == (spec.arg == "bigger")
            assert tgt.objects[1:] == src.objects[1:] or spec.op in ("add", "remove")


def test_reference_tasks_take_objects_from_the_inputs() -> None:
    rnd = random.Random(1)
    for op in REF_OPS:
        for _ in range(20):
            spec = ref_spec(rnd, op)
            inputs, tgt = realize_task(spec, rnd)
            assert len(inputs) == len(spec.backgrounds) >= 2
            if op == "combine":
                assert len(tgt.objects) == sum(len(s.objects) for s in inputs)
                assert tgt.background == inputs[0].background
            elif op == "onto":
                assert tgt.background == inputs[1].background
                assert tgt.objects == inputs[0].objects
            else:
                assert {o.color for o in tgt.objects} == {inputs[1].objects[0].color}
