"""The report's four setups and the compact TDNN's recipe, each reproducible from one experiment config."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import mlflow
import pytest
import torch
from hydra.utils import instantiate

from emotion.models.fusion import Fusion
from emotion.models.weights import network_state
from emotion.pipeline import train
from emotion.pipeline.build import build_module
from emotion.tracking.checkpoints import resolve_checkpoint
from tests.conftest import FEW_BATCHES, finished_runs

REPORT_SETUPS = {
    "report_cnn1d_mel": ("cnn1d", "mel_mean", 552_486),
    "report_cnn2d_mel": ("cnn2d", "logmel", 830_726),
    "report_cnn2d_mfcc": ("cnn2d", "mfcc", None),
    "report_fusion": ("fusion", "logmel_mfcc", None),
}


@pytest.mark.parametrize("experiment", sorted(REPORT_SETUPS))
def test_each_report_setup_trains_at_the_reports_size(experiment: str, make_config, tracking_uri: str) -> None:
    architecture, features, trainable = REPORT_SETUPS[experiment]
    train(make_config(f"experiment={experiment}", *FEW_BATCHES))
    (run,) = finished_runs(tracking_uri)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["architecture"], run.data.tags["features"]) == (architecture, features)
    assert {"test/acc", "test/uar", "val/uar"} <= set(run.data.metrics)
    if trainable is not None:
        assert run.data.params["trainable_params"] == str(trainable)


def test_the_compact_tdnn_recipe_trains_with_its_masks_mixup_and_schedule(make_config, tracking_uri: str) -> None:
    cfg = make_config("experiment=compact_tdnn", *FEW_BATCHES, "trainer.max_epochs=2")
    assert (cfg.augment.spec.freq_mask, cfg.model.loss.mixup_alpha, cfg.model.loss.label_smoothing) == (16, 0.2, 0.1)
    train(cfg)
    (run,) = finished_runs(tracking_uri)
    assert run.data.tags["architecture"] == "tdnn" and run.data.params["trainable_params"] == "683350"
    assert run.data.params["model.scheduler._target_"] == "emotion.models.schedules.WarmupCosine"
    assert {"test/uar", "val/uar_best"} <= set(run.data.metrics)


def tiny_branch_run(make_config, features: str) -> str:
    train(
        make_config(
            "model=cnn2d", f"features={features}", "model.net.channels=[4,4,4]", "model.net.dense=8", *FEW_BATCHES
        )
    )
    runs = mlflow.search_runs(experiment_names=["emotion"], filter_string=f"tags.features = '{features}'")
    (run_id,) = runs.run_id
    return run_id


def test_stacked_fusion_freezes_the_trained_branches_and_trains_the_head(
    make_config, tracking_uri: str, tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mel_run = tiny_branch_run(make_config, "logmel")
    mfcc_run = tiny_branch_run(make_config, "mfcc")
    downloaded = mlflow.artifacts.download_artifacts(run_id=mfcc_run, dst_path=str(tmp_path / "download"))
    (mfcc_checkpoint,) = Path(downloaded).rglob("*.ckpt")

    cfg = make_config(
        "experiment=report_fusion",
        "model.net.mode=stacked",
        "model.net.branch.channels=[4,4,4]",
        "model.net.branch.dense=8",
        f"model.net.branch_checkpoints=[{mel_run},{mfcc_checkpoint}]",
    )
    features = instantiate(cfg.features)
    module = build_module(cfg, features)
    fusion = module.model
    datamodule = instantiate(cfg.data, features=features, cache_dir=cfg.paths.cache_dir)
    datamodule.setup()
    module.standardizer.fit(datamodule.datasets["train"].tensors)

    before = {k: v.clone() for k, v in fusion.state_dict().items()}
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    after = fusion.state_dict()

    branch_keys = [k for k in before if k.startswith("branches.")]
    head_keys = [k for k in before if k.startswith("head.")]
    assert branch_keys and head_keys
    assert [k for k in branch_keys if not torch.equal(before[k], after[k])] == []  # weights and BatchNorm stats
    assert any(not torch.equal(before[k], after[k]) for k in head_keys)
    assert all(not p.requires_grad for p in fusion.branches.parameters())


def test_stacked_fusion_loads_the_branch_weights_of_its_sources(make_config, tracking_uri: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mel_run = tiny_branch_run(make_config, "logmel")
    mfcc_run = tiny_branch_run(make_config, "mfcc")
    cfg = make_config(
        "experiment=report_fusion",
        "model.net.mode=stacked",
        "model.net.branch.channels=[4,4,4]",
        "model.net.branch.dense=8",
        f"model.net.branch_checkpoints=[runs:/{mel_run},{mfcc_run}]",
    )
    fusion: Fusion = build_module(cfg, instantiate(cfg.features)).model

    source = network_state(resolve_checkpoint(mel_run))
    loaded = fusion.branches["logmel"].state_dict()
    assert all(torch.equal(loaded[k], source[k]) for k in loaded)
