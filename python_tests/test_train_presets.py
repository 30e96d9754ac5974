"""Training presets per architecture family, chosen from the genotypes given and overridable: the
paper's appendix trains Hs-DAS on CIFAR-10 with batch 128 (DARTS-family and Hc-DAS cells as DARTS
does, batch 96) and its ImageNet H-DAS network at C = 39 (DARTS' ImageNet chain keeps C = 48)."""
import json

import pytest

from hdas_ext import cli
from hdas_ext.train.config import family, make_config


def printed(capsys, *argv):
    assert cli.main(["train", *argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_family_from_the_genotypes():
    assert family("DARTS_V2", None) == "darts" and family("PDARTS", None) == "darts"
    assert family("HC_DAS", None) == "hc-das"
    assert family("DARTS_V2", "HS_DAS_CIFAR") == family("HC_DAS", "HS_DAS_CIFAR") == "hs-das"


@pytest.mark.parametrize("argv, batch", [
    ([], 96), (["--cell", "PDARTS"], 96), (["--cell", "HC_DAS"], 96),
    (["--stages", "HS_DAS_CIFAR"], 128), (["--cell", "HC_DAS", "--stages", "HS_DAS_CIFAR"], 128),
    (["--stages", "HS_DAS_CIFAR", "--batch-size", "64"], 64),
])
def test_cifar10_batch_per_family(capsys, argv, batch):
    cfg = printed(capsys, "--preset", "cifar10", *argv)
    assert cfg["batch_size"] == batch
    assert (cfg["epochs"], cfg["lr"], cfg["weight_decay"], cfg["init_channels"], cfg["auxiliary_weight"],
            cfg["cutout"], cfg["drop_path_prob"]) == (600, 0.025, 3e-4, 36, 0.4, 16, 0.2)


def test_imagenet_hdas_recipe(capsys):
    cfg = printed(capsys, "--preset", "imagenet", "--stages", "HS_DAS_IMAGENET")
    assert (cfg["init_channels"], cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["weight_decay"],
            cfg["label_smoothing"], cfg["auxiliary"], cfg["auxiliary_weight"]) == (39, 250, 128, 0.1, 3e-5, 0.1, True, 0.4)
    assert printed(capsys, "--preset", "imagenet")["init_channels"] == 48                 # DARTS' chain
    assert printed(capsys, "--preset", "imagenet", "--cell", "HC_DAS")["init_channels"] == 48
    assert printed(capsys, "--preset", "imagenet", "--stages", "HS_DAS_IMAGENET", "--init-channels", "48")[
        "init_channels"] == 48


def test_family_presets_in_python_and_help(capsys):
    assert make_config("cifar10", check_data=False, stages="HS_DAS_CIFAR").batch_size == 128
    assert make_config("cifar10", check_data=False, stages="HS_DAS_CIFAR", batch_size=32).batch_size == 32
    assert make_config("digits", stages="HS_DAS_CIFAR").batch_size == 64       # the digits preset is not adapted
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cifar10 with hs-das networks: batch_size 128; imagenet with hs-das networks: init_channels 39" in text
