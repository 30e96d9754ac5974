"""AutoAugment (torchvision's CIFAR-10 policy) as a training option: applied after the crop and
flip and before normalisation and Cutout, per sample; a missing torchvision is one line naming
the extra."""
import json
import os
import subprocess
import sys

import pytest
import torch

from hdas_ext import cli
from hdas_ext.data import augment_batch, get_dataset
from hdas_ext.train import make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.usefixtures("single_thread")


def test_policy_sits_between_flip_and_normalisation():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8).float().div(255)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    invert = lambda img: 255 - img          # a policy as AutoAugment is called: one uint8 image
    got = augment_batch(x, mean=mean, std=std, policy=invert)
    torch.testing.assert_close(got, augment_batch(1 - x, mean=mean, std=std), rtol=0, atol=1e-6)
    # crop and flip happen first: same RNG draws with and without an identity policy
    torch.manual_seed(1)
    a = augment_batch(x, crop_padding=2, flip=True, policy=lambda img: img)
    torch.manual_seed(1)
    torch.testing.assert_close(a, augment_batch(x, crop_padding=2, flip=True), rtol=0, atol=1e-6)


def test_digits_with_the_cifar10_policy():
    plain = get_dataset("digits", train=True)
    auto = get_dataset("digits", train=True, autoaugment=True)
    assert isinstance(auto.policy, torchvision.transforms.AutoAugment)
    assert auto.policy.policy == torchvision.transforms.AutoAugmentPolicy.CIFAR10
    assert auto.select(slice(0, 4)).policy is not None                 # kept by subsets
    assert get_dataset("digits", train=False, autoaugment=True).policy is None   # test images untouched
    torch.manual_seed(0)
    batch = torch.stack([auto[i][0] for i in range(64)])
    torch.manual_seed(0)
    ref = torch.stack([plain[i][0] for i in range(64)])
    assert batch.shape == ref.shape and torch.isfinite(batch).all()
    assert not torch.equal(batch, ref)                                   # the policy changed images
    with pytest.raises(ValueError, match="autoaugment"):
        get_dataset("imagenet", root="/nonexistent", autoaugment=True)


def test_training_option(tmp_path):
    assert make_config("cifar10", check_data=False, autoaugment=True).autoaugment
    with pytest.raises(ValueError, match="autoaugment must be off for imagenet"):
        make_config("imagenet", check_data=False, autoaugment=True)
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--train-subset", "32", "--test-subset", "16", "--init-channels", "4",
                     "--layers", "3", "--autoaugment", "--no-progress", "--no-tensorboard", "--output", str(out)]) == 0
    with open(out / "config.json") as f:
        assert json.load(f)["autoaugment"] is True


def test_missing_torchvision_is_one_line(tmp_path):
    stub = tmp_path / "stubs" / "torchvision"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n")
    script = ("import sys\nfrom hdas_ext.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('EXIT', e.code)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub.parent), ROOT]), OMP_NUM_THREADS="1")
    env.pop("HDAS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", script, "train", "--autoaugment", "--epochs", "1", "--output",
                           str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "EXIT hdas train: error: torchvision is not installed (the 'data' extra): pip install torchvision" \
        in proc.stdout, proc.stdout + proc.stderr[-2000:]
