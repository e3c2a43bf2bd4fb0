import numpy as np
from PIL import Image

from components.grid import make_grid, save_grid


def test_grid_places_each_image_in_row_major_order(tmp_path):
    images = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)])
    sheet = make_grid(images, columns=3, padding=1)
    assert sheet.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert sheet[1, 1, 0] == 10 and sheet[1, 6, 0] == 20 and sheet[6, 1, 0] == 40
    assert sheet[6, 11, 0] == 255  # the empty sixth cell stays white
    save_grid(tmp_path / "g.png", images, columns=3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), make_grid(images, columns=3))
