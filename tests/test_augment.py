"""Augmentation semantics on known images, and the device and classic pipelines agreeing."""

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from mnistlab.data.augment import TTA_VIEWS, affine_theta, apply_affine, augment_batch, classic_transform, sampling_grid
from mnistlab.config import AugmentConfig, load_config
from mnistlab.data.pipeline import DeviceBatches


def horizontal_bar() -> torch.Tensor:
    img = torch.zeros(1, 1, 28, 28)
    img[..., 13:15, 4:24] = 1.0
    return img


def transform(img, angle=0.0, zoom=1.0, tx=0.0, ty=0.0, scale=1.0):
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return apply_affine(img, affine_theta(t(angle), t(zoom), t(tx), t(ty), t(scale), size=28))


def test_the_sampling_grid_is_affine_grids():
    """Every augmented pixel depends on these coordinates: the cheaper grid must give affine_grid's up to
    float rounding. Not bit for bit: affine_grid's batched matmul sums in an order that torch builds
    choose (2.14 rounds differently from 2.13), so the last bit of a coordinate is no contract."""
    g = torch.Generator().manual_seed(0)
    n = 300

    def uniform(lo, hi):
        return torch.rand(n, generator=g) * (hi - lo) + lo

    zoom = torch.where(torch.rand(n, generator=g) < 0.3, 28 / 22, 1.0)
    thetas = [affine_theta(uniform(-15, 15), zoom, uniform(-3, 3), uniform(-3, 3), uniform(0.9, 1.1), size=28)]
    ones = torch.ones(len(TTA_VIEWS))
    thetas.append(affine_theta(torch.tensor([float(v[0]) for v in TTA_VIEWS]), ones,
                               torch.tensor([float(v[1]) for v in TTA_VIEWS]),
                               torch.tensor([float(v[2]) for v in TTA_VIEWS]), ones, size=28))
    for theta in thetas:
        for size in ([28, 28], [32, 24], [1, 5]):
            expected = F.affine_grid(theta, [len(theta), 1, *size], align_corners=False)
            gx, gy = sampling_grid(theta, *size)
            torch.testing.assert_close(gx, expected[..., 0], rtol=0, atol=1e-6, msg=str(size))
            torch.testing.assert_close(gy, expected[..., 1], rtol=0, atol=1e-6, msg=str(size))


def test_rotating_a_bar_by_90_degrees_makes_it_vertical():
    out = transform(horizontal_bar(), angle=90)[0, 0]
    rows, cols = torch.nonzero(out > 0.5, as_tuple=True)
    assert cols.max() - cols.min() <= 2 and rows.max() - rows.min() >= 17


def test_rotation_direction_and_geometry_match_torchvision():
    img = torch.zeros(1, 1, 28, 28)
    img[..., 6:9, 14:22] = 1.0  # an off-centre blob shows the direction of rotation
    for angle in (-30, 15, 90):
        ours = transform(img, angle=angle)
        theirs = TF.rotate(img, angle, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
        assert (ours - theirs).abs().max() < 1e-4, angle


def test_centre_crop_equals_crop_then_resize():
    img = torch.rand(1, 1, 28, 28)
    ours = transform(img, zoom=28 / 22)
    theirs = TF.resize(TF.center_crop(img, [22, 22]), [28, 28], interpolation=TF.InterpolationMode.BILINEAR,
                       antialias=False)
    # interior only: at the crop's edge resize clamps, the zoom reads one neighbouring pixel
    assert (ours - theirs)[..., 1:-1, 1:-1].abs().max() < 1e-4


def test_translation_moves_content_by_pixels():
    img = torch.zeros(1, 1, 28, 28)
    img[..., 10, 10] = 1.0
    out = transform(img, tx=3, ty=-2)[0, 0]
    assert torch.nonzero(out > 0.5).tolist() == [[8, 13]]


def test_background_stays_zero_and_parameters_differ_per_image():
    batch = horizontal_bar().repeat(64, 1, 1, 1)
    aug = AugmentConfig(rotate=45)
    out = augment_batch(batch, aug, torch.Generator().manual_seed(0))
    assert out[:, :, 0, 0].abs().max() == 0  # corners: the fill is MNIST's black
    distinct = {tuple(o.flatten().round(decimals=3).tolist()) for o in out}
    assert len(distinct) > 60


def test_crop_probability_is_respected():
    img = torch.zeros(1, 1, 28, 28)
    img[..., 1, :] = 1.0  # a line near the top edge vanishes when the 22x22 centre is cropped
    batch = img.repeat(2000, 1, 1, 1)
    out = augment_batch(batch, AugmentConfig(center_crop={"size": 22, "p": 0.1}), torch.Generator().manual_seed(0))
    cropped = (out.flatten(1).sum(1) < 1).float().mean().item()
    assert 0.07 < cropped < 0.13


def test_classic_and_device_pipelines_agree_without_randomness():
    # fixed parameters through both implementations: the same image comes out
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ring = ((yy - 13) ** 2 / 64 + (xx - 15) ** 2 / 25 - 1).abs() < 0.35  # a "0", off-centre
    digit = ring.to(torch.uint8) * 255
    digit[2:5, 3:25] = 255  # and a bar that the 22 x 22 crop cuts away
    aug = AugmentConfig(rotate=(20, 20), center_crop={"size": 22, "p": 1.0})
    classic = classic_transform(aug, mean=0.0, std=1.0)(Image.fromarray(digit.numpy(), mode="L"))
    device = augment_batch(digit[None, None].float() / 255, aug, torch.Generator().manual_seed(0))[0]
    assert classic.shape == device.shape == (1, 28, 28)
    # PIL resamples twice in 8-bit, we once in float: close, not equal
    assert (classic - device).abs().mean() < 0.03
    assert torch.corrcoef(torch.stack([classic.flatten(), device.flatten()]))[0, 1] > 0.97


def test_device_batches_normalize_like_totensor_then_normalize():
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    labels = torch.arange(10)
    batches = DeviceBatches(images, labels, batch_size=4, mean=0.1307, std=0.3081, shuffle=False)
    x, y = next(iter(batches))
    expected = torch.stack([TF.normalize(TF.to_tensor(Image.fromarray(im.numpy(), mode="L")), [0.1307], [0.3081])
                            for im in images[:4]])
    assert torch.allclose(x, expected, atol=1e-5) and torch.equal(y, labels[:4])
    assert len(batches) == 3


@pytest.mark.parametrize("limit", [None, 2])
def test_device_batches_shuffle_every_epoch_and_respect_limit(limit):
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1).expand(100, 28, 28).contiguous()
    batches = DeviceBatches(images, torch.arange(100), 10, 0.0, 1.0, generator=torch.Generator().manual_seed(0),
                            limit=limit)
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert len(first) == (limit or 10) * 10 and not torch.equal(first, second)
    if limit is None:
        assert sorted(first.tolist()) == list(range(100))


GROUPING_AUGS = [AugmentConfig(center_crop={"size": 22, "p": 0.1}, rotate=15),  # the seven-iteration 1x1-conv study's
                  AugmentConfig(center_crop={"size": 22, "p": 0.3}, rotate=12, translate=0.08, scale=[0.9, 1.1]),
                  AugmentConfig(translate=0.1),
                  AugmentConfig(rotate=8, elastic={"alpha": 34, "sigma": 4, "p": 0.7}),
                  AugmentConfig(elastic={"alpha": 34, "sigma": 4})]


@pytest.mark.parametrize("aug", GROUPING_AUGS, ids=["study", "all", "shift", "turn+elastic", "elastic"])
@pytest.mark.parametrize("sizes", [[64, 64, 64], [128, 128], [32] * 5 + [16], [100] * 3, [7] * 5, [64]])
def test_several_batches_at_once_are_batch_after_batch_bit_for_bit(aug, sizes):
    # On the CPU, grouping batches (pipeline.CHUNK_IMAGES) must not move a pixel: the trained figures in
    # README were made batch by batch.
    x = torch.rand(sum(sizes), 1, 28, 28, generator=torch.Generator().manual_seed(1))
    one_gen, grouped_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    one_by_one = torch.cat([augment_batch(part.clone(), aug, one_gen) for part in x.split(sizes)])
    grouped = augment_batch(x.clone(), aug, grouped_gen, sizes)
    assert torch.equal(grouped, one_by_one)
    assert torch.equal(grouped_gen.get_state(), one_gen.get_state())  # what follows draws the same numbers


@pytest.mark.parametrize("chunk_images", [1, 30, 1024])
def test_device_batches_are_the_same_however_they_are_grouped(monkeypatch, chunk_images):
    import mnistlab.data.pipeline as pipeline

    images = torch.randint(0, 256, (95, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = GROUPING_AUGS[1]

    def epoch(chunk, limit=None):
        monkeypatch.setattr(pipeline, "CHUNK_IMAGES", chunk)
        batches = DeviceBatches(images, torch.arange(95), 10, 0.1307, 0.3081, aug,
                                torch.Generator().manual_seed(3), limit=limit)
        return [(x.clone(), y.clone()) for x, y in batches]

    reference = epoch(1)  # one batch at a time: what every pipeline did before grouping
    grouped = epoch(chunk_images)
    assert [len(y) for _, y in grouped] == [10] * 9 + [5]  # the short last batch too
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(reference, grouped))
    assert [len(y) for _, y in epoch(chunk_images, limit=4)] == [10] * 4


def test_config_augment_reaches_the_pipeline():
    cfg = load_config(raw={"model": "iter5", "data": {"augment": {"rotate": 15, "center_crop": {"size": 22, "p": 0.1}}}})
    assert cfg.data.augment.active and cfg.data.augment.center_crop.p == 0.1
    assert not load_config(raw={"model": "iter5"}).data.augment.active


def test_tta_views_are_the_image_its_one_pixel_shifts_and_two_turns():
    from mnistlab.data.augment import TTA_VIEWS, tta_views

    background = -0.1307 / 0.3081
    img = horizontal_bar() * 3.0 + background  # normalized: ink 3, background as MNIST's black
    views = list(tta_views(img, background))
    assert len(views) == len(TTA_VIEWS) == 7 and torch.equal(views[0], img)
    right = torch.full_like(img, background)
    right[..., :, 1:] = img[..., :, :-1]
    assert torch.allclose(views[1], right, atol=1e-5)  # +1 pixel in x: exact, the new column is background
    up = torch.full_like(img, background)
    up[..., :-1, :] = img[..., 1:, :]
    assert torch.allclose(views[4], up, atol=1e-5)
    for turned in views[5:]:
        assert not torch.allclose(turned, img, atol=1e-3)
        assert turned.min() >= background - 1e-5  # the corners brought in are background, not zeros


def test_evaluate_with_identical_views_equals_a_single_view():
    from mnistlab.training.engine import score

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    batches = [(torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))) for _ in range(3)]
    plain = score(model, batches, torch.device("cpu"))
    doubled = score(model, batches, torch.device("cpu"), views=lambda x: [x, x, x])
    assert doubled.acc == plain.acc and doubled.n == 150
    assert doubled.loss == pytest.approx(plain.loss, rel=1e-5)
    assert torch.equal(doubled.predictions, plain.predictions)


def ring_digit() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    return ((((yy - 13) ** 2 / 64 + (xx - 15) ** 2 / 25 - 1).abs() < 0.35).to(torch.uint8) * 255)


def field_statistics(d: torch.Tensor) -> torch.Tensor:
    """N x 2 x H x W displacement fields -> [std of x, std of y, correlation of x 3 pixels apart]."""
    x = d[:, 0]
    near = torch.corrcoef(torch.stack([x[:, :, :-3].flatten(), x[:, :, 3:].flatten()]))[0, 1]
    return torch.stack([d[:, 0].std(), d[:, 1].std(), near])


@pytest.mark.parametrize("sigma,shape", [(4.0, (28, 28)), (6.0, (28, 28)), (1.5, (20, 28))])
def test_the_blur_is_torchvisions_gaussian_blur(sigma, shape):
    # the same Gaussian kernel and reflected border as torchvision's ElasticTransform, as matrix products
    from torchvision.transforms.v2.functional import gaussian_blur
    from mnistlab.data.augment import elastic_displacement

    h, w = shape
    noise = torch.rand(5, 2, h, w, generator=torch.Generator().manual_seed(0))
    size = int(8 * sigma + 1) | 1
    theirs = gaussian_blur((noise * 2 - 1).view(10, 1, h, w), [size, size], [sigma, sigma]).view(5, 2, h, w)
    theirs = theirs * torch.tensor([20.0 / w, 20.0 / h]).view(1, 2, 1, 1)
    on = torch.tensor([True, True, False, True, True])
    ours = elastic_displacement(noise, on, 20.0, sigma)
    assert torch.allclose(ours[on], theirs[on], atol=1e-5) and ours[~on].abs().max() == 0


@pytest.mark.parametrize("alpha,sigma", [(34.0, 4.0), (50.0, 5.0), (20.0, 2.5)])
def test_elastic_fields_are_torchvisions_in_distribution(alpha, sigma):
    from torchvision.transforms.v2 import ElasticTransform
    from mnistlab.data.augment import elastic_displacement

    n = 400
    torch.manual_seed(0)
    theirs = torch.cat([ElasticTransform(alpha, sigma).make_params([torch.zeros(1, 28, 28)])["displacement"]
                        for _ in range(n)]).permute(0, 3, 1, 2)  # N x 2 x H x W
    noise = torch.rand(n, 2, 28, 28, generator=torch.Generator().manual_seed(1))
    ours = elastic_displacement(noise, torch.ones(n, dtype=torch.bool), alpha, sigma)
    a, b = field_statistics(theirs), field_statistics(ours)
    assert torch.allclose(a, b, rtol=0.08), (a, b)
    # the check can tell a wrong strength or smoothness apart
    assert not torch.allclose(a, field_statistics(elastic_displacement(noise, noise[:, 0, 0, 0] < 2, alpha * 1.3,
                                                                       sigma)), rtol=0.08)
    assert not torch.allclose(a, field_statistics(elastic_displacement(noise, noise[:, 0, 0, 0] < 2, alpha,
                                                                       sigma * 0.6)), rtol=0.08)
    assert elastic_displacement(noise, torch.zeros(n, dtype=torch.bool), alpha, sigma).abs().max() == 0


@pytest.mark.parametrize("aug", [AugmentConfig(elastic={"alpha": 34, "sigma": 4}),
                                 AugmentConfig(rotate=10, translate=0.06, elastic={"alpha": 50, "sigma": 5, "p": 0.5})],
                         ids=["elastic", "affine+elastic"])
def test_elastic_device_and_classic_pipelines_agree_in_distribution(aug):
    # The same digit distorted 500 times each way: the mean image and the per-pixel spread agree (the
    # classic pipeline samples twice, in 8 bits between the steps, so close, not equal), and a
    # distortion twice as strong would not.
    digit, n = ring_digit(), 500
    torch.manual_seed(0)
    classic = classic_transform(aug, mean=0.0, std=1.0)
    theirs = torch.stack([classic(Image.fromarray(digit.numpy(), mode="L")) for _ in range(n)])
    batch = digit[None, None].float().expand(n, 1, 28, 28) / 255

    def stats(out):
        return out.mean(0), out.std(0)

    (m1, s1), (m2, s2) = stats(theirs), stats(augment_batch(batch.clone(), aug, torch.Generator().manual_seed(0)))
    stronger = aug.model_copy(update={"elastic": aug.elastic.model_copy(update={"alpha": aug.elastic.alpha * 2})})
    m3, s3 = stats(augment_batch(batch.clone(), stronger, torch.Generator().manual_seed(0)))
    assert (m1 - m2).abs().mean() < 0.012 and (s1 - s2).abs().mean() < 0.02, ((m1 - m2).abs().mean(), (s1 - s2).abs().mean())
    assert (m1 - m3).abs().mean() > 2 * (m1 - m2).abs().mean()
    assert abs(theirs.sum((1, 2, 3)).mean() - augment_batch(batch.clone(), aug, torch.Generator().manual_seed(0))
               .sum((1, 2, 3)).mean()) < 0.05 * theirs.sum((1, 2, 3)).mean()  # the ink is kept


def test_mixup_blends_the_batch_with_itself_reversed_and_weights_the_targets():
    import numpy as np

    from mnistlab.config import ImageMixConfig as MixConfig
    from mnistlab.data.augment import mix_batch

    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    mixed, target = mix_batch(x, y, MixConfig(alpha=0.4), None, 10, np.random.default_rng(5))
    twin = np.random.default_rng(5)
    twin.random()
    lam = twin.beta(0.4, 0.4)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0))
    assert torch.allclose(target[0, [0, 3]], torch.tensor([lam, 1 - lam], dtype=torch.float32))
    assert torch.allclose(target.sum(1), torch.ones(4))


def test_cutmix_pastes_a_box_and_weights_the_targets_by_its_area():
    import numpy as np

    from mnistlab.config import ImageMixConfig as MixConfig
    from mnistlab.data.augment import mix_batch

    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    mixed, target = mix_batch(x, y, None, MixConfig(alpha=1.0), 10, np.random.default_rng(3))
    pasted = (mixed != x)[0, 0]  # where image 0 now shows image 3
    rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
    box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    assert torch.equal(mixed[0, 0][box], x[3, 0][box]) and pasted[box].all()
    assert pasted.sum() == (~torch.isclose(x[0], x[3]))[0][box].sum()  # nothing outside the box changed
    area = pasted[box].numel() / 28 ** 2
    assert torch.allclose(target[0, [0, 3]], torch.tensor([1 - area, area]))


def test_mix_with_p_0_leaves_the_batch_and_the_labels_as_they_were():
    import numpy as np

    from mnistlab.config import ImageMixConfig as MixConfig
    from mnistlab.data.augment import mix_batch

    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    mixed, target = mix_batch(x, y, MixConfig(p=0), MixConfig(p=0), 10, np.random.default_rng(0))
    assert mixed is x and target is y  # the step is then the unmixed step, bit for bit
