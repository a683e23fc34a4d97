"""The in-process SHARP backend driven by the stand-in ``sharp`` package (tests/standins).

Expected outputs are computed independently here: ml-sharp's documented preprocessing (/255,
bilinear ``align_corners=True`` resize to the square internal size), one image per forward pass
with its own disparity factor, then the slow upstream unprojection of the reference module.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from emulators.files import FileServer
from sharp_dataset_pipeline.errors import ConfigError, FatalDeviceError
from sharp_dataset_pipeline.predict.base import ReadyGaussians
from sharp_dataset_pipeline.predict.sharp import SharpOptions, SharpPredictor, describe_install_help, sharp_available
from sharp_dataset_pipeline.records import Failure, FetchedImage, Item
from sharp_dataset_pipeline.splat.ply import validate_ply, write_ply
from sharp_dataset_pipeline.splat.unproject import NdcSplat

STANDINS = Path(__file__).resolve().parents[1] / "standins"
_spec = importlib.util.spec_from_file_location("standin_sharp_gaussians_p", STANDINS / "sharp/utils/gaussians.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

# (height, width, focal px): non-square both ways, square, different disparity factors.
SHAPES = [(40, 60, 50.0), (64, 64, 80.0), (90, 30, 45.0), (50, 70, 140.0), (33, 47, 60.0)]


def _forget_sharp() -> None:
    for name in [n for n in sys.modules if n == "sharp" or n.startswith("sharp.")]:
        del sys.modules[name]


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("torch")
    _forget_sharp()
    monkeypatch.syspath_prepend(str(STANDINS))
    for name in ("SHARP_STANDIN_MAX_BATCH", "SHARP_STANDIN_FATAL"):
        monkeypatch.delenv(name, raising=False)
    import sharp.models as models

    models.CREATED.clear()
    yield models
    _forget_sharp()


@pytest.fixture
def checkpoint(tmp_path: Path, standin) -> Path:
    import torch

    model = standin.RGBGaussianPredictor(standin.PredictorParams(seed=7))  # not the default weights
    path = tmp_path / "sharp_test7.pt"
    torch.save(model.state_dict(), path)
    return path


def fetched(i: int, shape: tuple[int, int, float], black: bool = False) -> FetchedImage:
    h, w, f = shape
    rng = np.random.default_rng(100 + i)
    rgb = np.zeros((h, w, 3), np.uint8) if black else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    item = Item(id=f"img{i}", source="test", unit="u0", offset=i)
    return FetchedImage(item=item, original_path=Path(f"/nonexistent/img{i}.jpg"), ext="jpg", rgb=rgb,
                        width=w, height=h, focal_px=f, focal_source="test", size=0, sha256="")


def expected_attributes(models, ckpt: Path, img: FetchedImage) -> np.ndarray:
    """One image alone through the stand-in network, then the slow upstream post-processing."""
    import torch
    import torch.nn.functional as F

    model = models.RGBGaussianPredictor(models.PredictorParams())
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    size = models.INTERNAL_SIZE
    x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)
    with torch.no_grad():
        g = model.eval()(x, torch.tensor([img.focal_px / img.width]))
    m, s, q = ref.reference_unproject(
        g.mean_vectors[0].double().numpy(), g.singular_values[0].double().numpy(),
        g.quaternions[0].double().numpy(), np.eye(4),
        ref.internal_intrinsics(img.focal_px, img.width, img.height), (1536, 1536))
    return ref.reference_attributes(m, s, q, g.colors[0].numpy(), g.opacities[0].numpy())


def assert_matches(vertices: np.ndarray, attrs: np.ndarray) -> None:
    np.testing.assert_allclose(vertices[:, :7], attrs[:, :7], rtol=2e-5, atol=2e-6)

    def cov(v: np.ndarray) -> np.ndarray:
        rot = Rotation.from_quat(v[:, [11, 12, 13, 10]].astype(np.float64)).as_matrix()
        return (rot * np.exp(2 * v[:, 7:10].astype(np.float64))[:, None, :]) @ rot.transpose(0, 2, 1)

    a, b = cov(vertices), cov(attrs)
    rel = np.linalg.norm(a - b, axis=(1, 2)) / np.linalg.norm(b, axis=(1, 2))
    assert rel.max() < 2e-5


def test_batch_in_one_forward_in_order_with_per_image_disparity(standin, checkpoint: Path, tmp_path: Path) -> None:
    images = [fetched(i, s) for i, s in enumerate(SHAPES)]
    predictor = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=8))
    results = predictor.predict(images)
    model = standin.CREATED[-1]
    assert model.batch_sizes == [5]  # one forward pass for the whole batch
    assert predictor.model_version == "sharp_test7"
    for img, res in zip(images, results, strict=True):
        g = res.to_gaussians()
        assert (g.width, g.height, g.focal_px, g.count) == (img.width, img.height, img.focal_px, 128)
        assert_matches(g.vertices, expected_attributes(standin, checkpoint, img))
        size, _ = write_ply(g, tmp_path / f"{img.item.id}.ply")
        assert validate_ply(tmp_path / f"{img.item.id}.ply").count == 128 and size > 0


def test_device_side_unprojection_path(standin, checkpoint: Path) -> None:
    # The GPU path (unprojection on the prediction device, one block back), run here on the CPU.
    images = [fetched(i, s) for i, s in enumerate(SHAPES[:3])]
    results = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=3,
                             unproject_on_device=True)).predict(images)
    for img, res in zip(images, results, strict=True):
        assert isinstance(res, ReadyGaussians)
        assert_matches(res.to_gaussians().vertices, expected_attributes(standin, checkpoint, img))


def test_same_image_with_other_focal_gives_other_depths(standin, checkpoint: Path) -> None:
    a = fetched(0, (40, 60, 50.0))
    b = fetched(0, (40, 60, 100.0))
    ga, gb = (r.to_gaussians() for r in SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu",
                                                        batch_size=2)).predict([a, b]))
    assert not np.allclose(ga.vertices[:, 2], gb.vertices[:, 2])


def test_model_built_and_loaded_once(standin, checkpoint: Path) -> None:
    predictor = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=2))
    images = [fetched(i, s) for i, s in enumerate(SHAPES)]
    predictor.predict(images[:3])
    predictor.predict(images[3:])
    assert len(standin.CREATED) == 1
    model = standin.CREATED[0]
    assert model.state_dict_loads == 1 and not model.training
    assert model.batch_sizes == [2, 1, 2]


def raw_network_output(models, ckpt: Path, img: FetchedImage) -> list[np.ndarray]:
    """The stand-in network's own NDC output for one image (means, scales, quats, colors, opacities)."""
    import torch
    import torch.nn.functional as F

    model = models.RGBGaussianPredictor(models.PredictorParams())
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    size = models.INTERNAL_SIZE
    x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)
    with torch.no_grad():
        g = model.eval()(x, torch.tensor([img.focal_px / img.width]))
    return [t[0].float().numpy() for t in (g.mean_vectors, g.singular_values, g.quaternions, g.colors, g.opacities)]


def test_cpu_results_are_ndc_and_pickle_for_the_worker_pool(standin, checkpoint: Path) -> None:
    img = fetched(0, SHAPES[0])
    res = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu")).predict([img])[0]
    # Still in NDC: exactly the network's output arrays, not yet unprojected (that runs in the worker pool).
    assert isinstance(res, NdcSplat), type(res)
    raw = raw_network_output(standin, checkpoint, img)
    got = [res.means, res.scales, res.quats, res.colors, res.opacities]
    for name, a, b in zip(("means", "scales", "quats", "colors", "opacities"), got, raw, strict=True):
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
    assert (res.focal_px, res.width, res.height) == (img.focal_px, img.width, img.height)
    metric = expected_attributes(standin, checkpoint, img)
    assert not np.allclose(res.means, metric[:, :3], atol=1e-3), "the means are already unprojected"
    copy = pickle.loads(pickle.dumps(res))
    assert isinstance(copy, NdcSplat)
    assert_matches(copy.to_gaussians().vertices, metric)


def test_out_of_memory_halves_the_batch_and_remembers(standin, checkpoint: Path, monkeypatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SHARP_STANDIN_MAX_BATCH", "2")
    images = [fetched(i, s) for i, s in enumerate(SHAPES)]
    predictor = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=8))
    with caplog.at_level(logging.WARNING):
        results = predictor.predict(images)
    assert "out of device memory with 5 images per pass; using 2" in caplog.text
    model = standin.CREATED[-1]
    assert model.batch_sizes == [5, 2, 2, 1]
    for img, res in zip(images, results, strict=True):
        assert_matches(res.to_gaussians().vertices, expected_attributes(standin, checkpoint, img))
    predictor.predict(images[:3])
    assert model.batch_sizes[4:] == [2, 1]


def test_out_of_memory_for_one_image_is_a_transient_failure(standin, checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARP_STANDIN_MAX_BATCH", "0")
    results = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=2)).predict(
        [fetched(0, SHAPES[0]), fetched(1, SHAPES[1])])
    assert [r.reason for r in results] == ["device_oom", "device_oom"]
    assert all(isinstance(r, Failure) and r.transient and r.stage == "predict" for r in results)
    assert [r.item_id for r in results] == ["img0", "img1"]


def test_failing_image_fails_alone(standin, checkpoint: Path) -> None:
    images = [fetched(0, SHAPES[0]), fetched(1, SHAPES[1], black=True), fetched(2, SHAPES[2])]
    results = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=4)).predict(images)
    assert isinstance(results[1], Failure)
    assert results[1].reason == "predict_error" and not results[1].transient
    assert "all-black" in results[1].detail and results[1].item_id == "img1"
    for i in (0, 2):
        assert_matches(results[i].to_gaussians().vertices, expected_attributes(standin, checkpoint, images[i]))
    assert standin.CREATED[-1].batch_sizes == [3, 1, 1, 1]


def test_bad_decoded_input_fails_before_the_model(standin, checkpoint: Path) -> None:
    bad = fetched(0, SHAPES[0])
    bad.rgb = bad.rgb.astype(np.float32)
    good = fetched(1, SHAPES[1])
    results = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu",
                                          batch_size=4)).predict([bad, good])
    assert isinstance(results[0], Failure) and results[0].reason == "bad_input"
    assert not isinstance(results[1], Failure)
    assert standin.CREATED[-1].batch_sizes == [1]


def test_device_fault_is_fatal(standin, checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARP_STANDIN_FATAL", "1")
    predictor = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=2))
    with pytest.raises(FatalDeviceError, match="illegal memory access"):
        predictor.predict([fetched(0, SHAPES[0]), fetched(1, SHAPES[1])])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trunk_changes_outputs_slightly(standin, checkpoint: Path, precision: str) -> None:
    images = [fetched(i, s) for i, s in enumerate(SHAPES[:3])]
    full = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=3)).predict(images)
    low = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu", batch_size=3,
                         precision=precision)).predict(images)
    assert not any(isinstance(r, Failure) for r in low)
    for a, b in zip(full, low, strict=True):
        va, vb = a.to_gaussians().vertices, b.to_gaussians().vertices
        assert not np.array_equal(va, vb)
        np.testing.assert_allclose(vb[:, :3], va[:, :3], rtol=0.05, atol=1e-3)
    assert set(standin.CREATED[-1].state_dict()) == set(standin.CREATED[0].state_dict())  # weights untouched


def test_checkpoint_from_the_torch_hub_cache_and_download(standin, checkpoint: Path, tmp_path: Path, monkeypatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with FileServer() as server:
        url = server.put("/models/sharp/sharp_2572gikvuh.pt", checkpoint.read_bytes())
        with caplog.at_level(logging.INFO):
            first = SharpPredictor(SharpOptions(checkpoint_path=None, device="cpu", checkpoint_url=url))
            first.load()
        assert "downloading the SHARP checkpoint (about 2.8 GB)" in caplog.text
        cached = tmp_path / "torch" / "hub" / "checkpoints" / "sharp_2572gikvuh.pt"
        assert cached.read_bytes() == checkpoint.read_bytes()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            second = SharpPredictor(SharpOptions(checkpoint_path=None, device="cpu", checkpoint_url=url))
            res = second.predict([fetched(0, SHAPES[0])])[0]
        assert "torch hub cache" in caplog.text and "downloading" not in caplog.text
        assert server.hits("/models/sharp/sharp_2572gikvuh.pt") == 1
    assert second.model_version == "sharp_2572gikvuh"
    assert_matches(res.to_gaussians().vertices, expected_attributes(standin, checkpoint, fetched(0, SHAPES[0])))


def test_failed_download_says_what_to_do(standin, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with FileServer() as server:
        url = server.url("/models/sharp/missing.pt")
        with pytest.raises(ConfigError, match="SHARP_CHECKPOINT_PATH"):
            SharpPredictor(SharpOptions(checkpoint_path=None, device="cpu", checkpoint_url=url)).load()


def test_configuration_errors(standin, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SHARP_PRECISION"):
        SharpPredictor(SharpOptions(checkpoint_path=None, precision="int8"))
    with pytest.raises(ConfigError, match="SHARP_BATCH_SIZE"):
        SharpPredictor(SharpOptions(checkpoint_path=None, batch_size=0))
    with pytest.raises(ConfigError, match="not name a file"):
        SharpPredictor(SharpOptions(checkpoint_path=str(tmp_path / "nope.pt"), device="cpu")).load()
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            SharpPredictor(SharpOptions(checkpoint_path=None, device="cuda")).load()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        SharpPredictor(SharpOptions(checkpoint_path=str(broken), device="cpu")).load()
    wrong = tmp_path / "wrong.pt"
    torch.save({"unexpected.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match="does not fit"):
        SharpPredictor(SharpOptions(checkpoint_path=str(wrong), device="cpu")).load()


def test_availability_follows_the_package(standin) -> None:
    assert sharp_available()


def test_without_ml_sharp_the_error_explains_how_to_install(monkeypatch) -> None:
    _forget_sharp()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != STANDINS.resolve()])
    if importlib.util.find_spec("sharp") is not None:
        pytest.skip("a real `sharp` package is installed here")
    assert not sharp_available()
    help_text = describe_install_help()
    assert "--predictor planar" in help_text and "sharp-cli" in help_text and "ml-sharp" in help_text
    with pytest.raises(ConfigError, match="--predictor planar"):
        SharpPredictor(SharpOptions(checkpoint_path=None)).load()


def test_agrees_with_the_upstream_named_api_end_to_end(standin, checkpoint: Path, tmp_path: Path) -> None:
    """Our backend + write_ply against forward → ``unproject_gaussians`` → ``save_ply`` (the CLI's flow)."""
    import torch
    import torch.nn.functional as F
    from sharp.utils.gaussians import load_ply, save_ply, unproject_gaussians

    img = fetched(4, SHAPES[4])
    ours = SharpPredictor(SharpOptions(checkpoint_path=str(checkpoint), device="cpu")).predict([img])[0].to_gaussians()
    write_ply(ours, tmp_path / "ours.ply")
    model = standin.create_predictor(standin.PredictorParams())
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    x = torch.from_numpy(img.rgb).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(standin.INTERNAL_SIZE,) * 2, mode="bilinear", align_corners=True)
    with torch.no_grad():
        ndc = model.eval()(x, torch.tensor([img.focal_px / img.width]))
    k = torch.from_numpy(ref.internal_intrinsics(img.focal_px, img.width, img.height))
    metric = unproject_gaussians(ndc, torch.eye(4), k, (1536, 1536))
    save_ply(metric, img.focal_px, (img.height, img.width), tmp_path / "upstream.ply")
    head = [p.read_bytes().split(b"end_header\n")[0] for p in (tmp_path / "ours.ply", tmp_path / "upstream.ply")]
    assert head[0] == head[1]
    g_up, meta = load_ply(tmp_path / "upstream.ply")
    assert meta.focal_length_px == pytest.approx(img.focal_px) and meta.resolution_px == (img.width, img.height)
    np.testing.assert_allclose(ours.vertices[:, :3], g_up.mean_vectors[0].numpy(), rtol=2e-5, atol=1e-6)
    up_attrs = ref.reference_attributes(
        g_up.mean_vectors[0].double().numpy(), g_up.singular_values[0].double().numpy(),
        g_up.quaternions[0].double().numpy(), metric.colors[0].numpy(), metric.opacities[0].numpy())
    assert_matches(ours.vertices, up_attrs)
