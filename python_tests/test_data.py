import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from hdas_ext.data import (DeviceLoader, InMemoryImages, ShardedSampler, augment_batch, dataset_info,
                           get_dataset, load_digits)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("single_thread")


def test_digits_split_shapes_and_normalisation():
    info = dataset_info("digits")
    train = get_dataset("digits", train=True, augment=False)
    test = get_dataset("digits", train=False)
    assert len(train) + len(test) == 1797 and len(test) == 360
    x, y = train[5]
    assert x.shape == (info["in_channels"], info["image_size"], info["image_size"])
    assert 0 <= y < info["num_classes"]
    xs = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(xs.mean().item()) < 1e-3 and abs(xs.std().item() - 1) < 1e-2
    assert torch.equal(xs[:, 0], xs[:, 2])  # grey replicated to 3 channels
    # the split is fixed and disjoint: no test image equals a train image at the same label set
    labels = torch.tensor([test[i][1] for i in range(len(test))])
    assert len(set(labels.tolist())) == 10
    assert torch.equal(get_dataset("digits", train=False)[7][0], test[7][0])


def test_embedded_digits_equal_scikit_learns():
    sk = pytest.importorskip("sklearn.datasets").load_digits()
    images, target = load_digits()
    assert images.dtype == sk.images.dtype and target.dtype == sk.target.dtype
    assert np.array_equal(images, sk.images) and np.array_equal(target, sk.target)


def test_digits_load_without_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"  # import sklearn now fails
            "from hdas_ext.data import get_dataset\n"
            "print(len(get_dataset('digits', train=True)), len(get_dataset('digits', train=False)))")
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["1437", "360"]


def test_digits_augmentation_is_random_and_eval_is_not():
    train = get_dataset("digits", train=True, augment=True)
    torch.manual_seed(0)
    a = torch.stack([train[3][0] for _ in range(8)])
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 8))
    test = get_dataset("digits", train=False, augment=True)  # augment ignored for the test split
    assert torch.equal(test[3][0], test[3][0])


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.rand(6, 3, 8, 8)
    out = augment_batch(x, crop_padding=2, generator=torch.Generator().manual_seed(1))
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(6):
        windows = [xp[b, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    # a seeded generator reproduces the draw
    again = augment_batch(x, crop_padding=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    # the padding holds crop_fill; the windows drawn are the same
    grey = augment_batch(x, crop_padding=2, generator=torch.Generator().manual_seed(1), crop_fill=0.5)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2), value=0.5)
    for b in range(6):
        assert any(torch.equal(grey[b], xp[b, :, i:i + 8, j:j + 8]) for i in range(5) for j in range(5))
    assert torch.equal(grey == 0.5, out == 0) and (out == 0).any()  # same windows, padding filled


def test_flip_and_cutout():
    x = torch.rand(64, 1, 6, 6) + 1.0  # strictly positive, so cutout zeros are recognisable
    out = augment_batch(x, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[b], x[b].flip(2)) for b in range(64)]
    same = [torch.equal(out[b], x[b]) for b in range(64)]
    assert all(f or s for f, s in zip(flipped, same)) and 10 < sum(flipped) < 54
    cut = augment_batch(torch.ones(200, 1, 32, 32), cutout=16)
    zeros = (cut == 0).sum(dim=(1, 2, 3))
    assert zeros.max().item() == 16 * 16 and zeros.min().item() >= 8 * 8
    for b in range(5):  # the zeroed region is one axis-aligned rectangle
        ys, xs = torch.nonzero(cut[b, 0] == 0, as_tuple=True)
        assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) == zeros[b]


def _write_fake_cifar(root, per_batch=4):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.RandomState(0)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(per_batch, 3 * 32 * 32)).astype(np.uint8)
        labels = rng.randint(0, 10, size=per_batch).tolist()
        arrays[name] = (data, labels)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return arrays


def test_cifar10_reads_the_real_pickle_format(tmp_path):
    arrays = _write_fake_cifar(str(tmp_path))
    train = get_dataset("cifar10", root=str(tmp_path), train=True, augment=False)
    test = get_dataset("cifar10", root=str(tmp_path), train=False)
    assert len(train) == 20 and len(test) == 4
    data, labels = arrays["data_batch_2"]
    x, y = train[5]  # second item of the second batch
    raw = torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255
    mean = torch.tensor(dataset_info("cifar10")["mean"]).view(3, 1, 1)
    std = torch.tensor(dataset_info("cifar10")["std"]).view(3, 1, 1)
    torch.testing.assert_close(x, (raw - mean) / std)
    assert y == labels[1]
    aug = get_dataset("cifar10", root=str(tmp_path), train=True, augment=True, cutout=16)
    assert aug[0][0].shape == (3, 32, 32) and (aug.crop_padding, aug.flip, aug.cutout) == (4, True, 16)
    assert aug.crop_fill == 128 / 255  # the released H-DAS recipe pads with grey
    assert aug.select([0, 2]).crop_fill == aug.subset(1).crop_fill == 128 / 255


def test_cifar10_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="root"):
        get_dataset("cifar10")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        get_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(ValueError, match="dataset name"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match="cutout"):
        get_dataset("digits", cutout=-1)


def test_sharded_sampler_ranks_partition_the_single_process_batches():
    n, b, world = 23, 3, 2
    single = ShardedSampler(n, shuffle=True, seed=5, rank=0, world=1)
    single.set_epoch(2)
    ranks = []
    for r in range(world):
        s = ShardedSampler(n, shuffle=True, seed=5, rank=r, world=world)
        s.set_epoch(2)
        ranks.append(s.indices())
    assert len(ranks[0]) == len(ranks[1]) == 11
    order = single.indices()[:22]
    for k in range(0, 11, b):
        union = set(ranks[0][k:k + b].tolist()) | set(ranks[1][k:k + b].tolist())
        assert union == set(order[world * k:world * (k + b)].tolist())
    other = ShardedSampler(n, shuffle=True, seed=5)
    other.set_epoch(3)
    assert not torch.equal(other.indices(), single.indices())
    ev = [ShardedSampler(n, shuffle=False, rank=r, world=2).indices() for r in range(2)]
    assert sorted(torch.cat(ev).tolist()) == list(range(n))


def test_device_loader_batches_and_state():
    ds = get_dataset("digits", train=True, augment=True).subset(50)
    sampler = ShardedSampler(len(ds), shuffle=True, seed=0)
    loader = DeviceLoader(ds, 16, sampler, "cpu", seed=3)
    state = loader.state_dict()
    batches = list(loader)
    assert len(batches) == len(loader) == 4 and batches[-1][0].shape == (2, 3, 16, 16)
    assert torch.equal(batches[0][1], ds.labels[sampler.indices()[:16]])
    loader.load_state_dict(state)
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    with pytest.raises(TypeError, match="InMemoryImages"):
        DeviceLoader(torch.utils.data.TensorDataset(torch.zeros(2)), 1, sampler, "cpu")
    assert isinstance(ds, InMemoryImages)
