"""``fgvc predict --maps DIR`` saves the same map figure the notebooks and the explorer draw."""

from PIL import Image
from test_cli_run import cub_run  # noqa: F401  (the fixture: a tiny GLSim run on an official CUB layout)

from fgvc.cli import main


def test_predict_saves_one_maps_figure_per_image(cub_run, tmp_path, capsys):  # noqa: F811
    root, out, _ = cub_run
    images = sorted((root / "images").rglob("*.jpg"))[:2]  # non-square files (40+ x 30 px)
    code = main(["predict", "--checkpoint", str(out / "seed0" / "best.safetensors"), *map(str, images),
                 "--maps", str(tmp_path / "maps")])
    assert code == 0
    printed = capsys.readouterr().out
    for image in images:
        path = tmp_path / "maps" / f"{image.stem}_maps.png"
        assert f"maps: {path}" in printed
        width, height = Image.open(path).size
        assert width > 400 and height > 150  # image | attention | rollout | similarity | crop, and the footer
