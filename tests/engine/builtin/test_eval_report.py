import numpy as np
from PIL import Image

from dreamserve.engine.builtin.eval_report import TARGETS, Tally, grid, markdown, table


def test_table_marks_each_target_met_or_not() -> None:
    t = Tally()
    for good in (True, True, False, True):
        t.add("count", good)
    t.add("color_shape", True)
    t.psnrs += [30.0, 20.0, 29.0]
    rows = table(t)
    assert rows == {"color_shape": 1.0, "count": 0.75, "edit_psnr_db": 29.0}
    md = markdown(rows, {"count": 4, "color_shape": 1, "edit_psnr_db": 3})
    assert "| count | 75.0% (n=4) | >= 80% | no |" in md
    assert "| edit_psnr_db | 29.0 dB | >= 28 dB | yes |" in md
    assert set(TARGETS) >= {"color_shape", "position", "relation", "count", "edit", "reference"}


def test_grid_wraps_rows_to_the_widest_and_keeps_every_sample() -> None:
    tile = Image.new("RGB", (256, 256), "red")
    strip = Image.new("RGB", (768, 256), "blue")
    g = grid([("a", tile)] * 5 + [("b", strip)] * 3, max_width=1300)
    assert g.width <= 1300 + 8 and g.height % (256 + 34) == 0
    reds = (np.asarray(g)[..., 0] == 255) & (np.asarray(g)[..., 2] == 0)
    assert reds.sum() == 5 * 256 * 256  # nothing overlaps or is cut
