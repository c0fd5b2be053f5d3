"""Training (train/): the VAE and DiT loops run and checkpoint, resume exactly, survive a kill while
writing a checkpoint, and export a model folder the pipeline loads. CPU, tiny configs, tiny data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import sigman.body.anny_body as anny_body_module
from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator
from sigman.data.uv_projection import ProjectionConfig
from train import checkpoint as ckpt
from train import train_dit, train_vae
from train.common import EMA, StreamBatchSampler, add_config_arguments, config_from_args, lr_multiplier
from train.export_demo import ExportError, export
from train.losses import head_point_index, region_pixel_mask, ssim
from conftest import no_anny  # noqa: E402

SYNTH = SyntheticConfig(views=4, image_size=64, uv_resolution=64, render_uv_resolution=64, elevations_deg=(0.0,),
                        batch_size=3, writer_threads=2, projection=ProjectionConfig(zbuffer_size=128))


@pytest.fixture(scope="module")
def data_dir(bank_path, tmp_path_factory):
    """3 items (2 train, 1 val) whose body shapes come from a shape bank, as on the GPU machine."""
    from sigman.body import load_body_model

    out = tmp_path_factory.mktemp("synth")
    generator = SyntheticGenerator(dataclasses.replace(SYNTH, shape_bank=str(bank_path)), device="cpu",
                                   body=load_body_model("anny"))
    generator.generate(out, count=3, seed=5, val_fraction=0.34)
    return out


def vae_config(data_dir, bank_path, workspace, **kw):
    # GAN from step 2, so the straight run and the resumed one both train the discriminator
    return dataclasses.replace(train_vae.CONFIGS["vae_tiny"], data=str(data_dir), shape_bank=str(bank_path),
                               workspace=str(workspace), **{"disc_start": 2, **kw})


def dit_config(data_dir, vae_workspace, workspace, **kw):
    return dataclasses.replace(train_dit.CONFIGS["dit_tiny"], data=str(data_dir), vae=str(vae_workspace),
                               workspace=str(workspace), **kw)


@pytest.fixture(scope="module")
def vae_run(data_dir, bank_path, tmp_path_factory):
    """A straight 4-step VAE run (checkpoints at 2 and 4) with anny unavailable: shapes come from the bank."""
    workspace = tmp_path_factory.mktemp("vae_a")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anny_body_module, "load_anny_module", no_anny)
        history = train_vae.train(vae_config(data_dir, bank_path, workspace))
    return workspace, history


@pytest.fixture(scope="module")
def dit_run(data_dir, vae_run, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("dit_a")
    return workspace, train_dit.train(dit_config(data_dir, vae_run[0], workspace))


def losses(history, keys=("loss",)):
    return {r["step"]: tuple(r[k] for k in keys) for r in history}


# --- the loops ------------------------------------------------------------------------------------

def test_vae_steps_write_checkpoints_and_logs(vae_run):
    workspace, history = vae_run
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in history)
    assert "g_gan" not in history[1] and "g_gan" in history[2] and "d_gan" in history[3]  # GAN from step 2
    assert history[0]["samples_per_s"] > 0 and history[0]["samples_per_s_total"] == history[0]["samples_per_s"]
    found = ckpt.list_checkpoints(workspace / "checkpoints")
    assert [p.name for p in found] == ["step_00000002", "step_00000004"]
    files = sorted(p.name for p in found[-1].iterdir())
    assert files == ["disc.safetensors", "disc_optimizer.json", "disc_optimizer.safetensors", "model.safetensors",
                     "optimizer.json", "optimizer.safetensors", "rng_rank0.json", "rng_rank0.safetensors",
                     "schedulers.json", "state.json"]
    vae, folder, _ = train_dit.load_trained_vae(workspace)  # strict load of the latest
    assert folder == found[-1] and vae.config.image_size == 32
    records = [json.loads(line) for line in (workspace / "logs" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 1 and val[0]["step"] == 4 and 0 < val[0]["psnr"] < 60
    assert (workspace / "logs" / "samples" / "val_renders_00000004.png").is_file()


def test_vae_resume_is_exact(vae_run, data_dir, bank_path, tmp_path, monkeypatch):
    monkeypatch.setattr(anny_body_module, "load_anny_module", no_anny)
    cfg = vae_config(data_dir, bank_path, tmp_path / "vae_b", ckpt_every=100)
    first = train_vae.train(cfg, stop_at=2)  # checkpoints at the stop, mid-schedule
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "vae_b" / "checkpoints")] == ["step_00000002"]
    second = train_vae.train(cfg, resume="latest")
    keys = ("loss", "l1", "mse", "ssim", "mask", "kl", "lr", "grad_norm")
    straight = losses(vae_run[1], keys)
    assert losses(first, keys) == {s: straight[s] for s in (1, 2)}
    assert losses(second, keys + ("g_gan", "d_gan")) == losses([r for r in vae_run[1] if r["step"] > 2], keys + ("g_gan", "d_gan"))


def test_dit_steps_write_checkpoints_and_eval(dit_run):
    workspace, history = dit_run
    assert [r["step"] for r in history] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in history)
    latest = ckpt.latest_checkpoint(workspace / "checkpoints")
    state = json.loads((latest / "state.json").read_text())
    assert state["kind"] == "dit" and state["step"] == 4 and state["ema_updates"] == 4
    assert {"model.safetensors", "ema.safetensors", "optimizer.safetensors"} <= {p.name for p in latest.iterdir()}
    assert 0.1 < state["latent_scaling_factor"] < 100
    records = [json.loads(line) for line in (workspace / "logs" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "eval"]
    assert len(evals) == 1 and np.isfinite(evals[0]["latent_mse"])
    assert (workspace / "latents" / "train.safetensors").is_file()


def test_killed_while_checkpointing_resumes_exactly(dit_run, data_dir, vae_run, tmp_path, monkeypatch):
    cfg = dit_config(data_dir, vae_run[0], tmp_path / "dit_b")
    root = tmp_path / "dit_b" / "checkpoints"
    real_write = ckpt.write_tensors

    class Killed(Exception):
        pass

    def write_then_die(path, tensors, metadata=None):
        if path.parent.name == ".tmp-step_00000004" and path.name == "ema.safetensors":
            raise Killed("simulated kill in the middle of writing checkpoint 4")
        real_write(path, tensors, metadata)

    with monkeypatch.context() as mp:
        mp.setattr(ckpt, "write_tensors", write_then_die)
        with pytest.raises(Killed):
            train_dit.train(cfg)
    assert (root / ".tmp-step_00000004" / "model.safetensors").is_file()  # half-written, never renamed
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000002"]
    assert ckpt.resolve_checkpoint(tmp_path / "dit_b").name == "step_00000002"
    resumed = train_dit.train(cfg, resume="latest")
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000002", "step_00000004"]
    assert losses(resumed, ("loss", "lr")) == {s: v for s, v in losses(dit_run[1], ("loss", "lr")).items() if s > 2}
    # the gradient norm is a float32 reduction whose last bit can differ between runs of the same
    # step (seen: 0.6703483 vs 0.6703484); it must agree to float tolerance
    norms, expected = losses(resumed, ("grad_norm",)), losses(dit_run[1], ("grad_norm",))
    assert set(norms) == {s for s in expected if s > 2}
    assert all(abs(norms[s][0] - expected[s][0]) <= 1e-6 * abs(expected[s][0]) for s in norms)
    records = [json.loads(line) for line in (tmp_path / "dit_b" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]  # the killed run's 3, 4 purged
    ema_a = ckpt.load_module_state(ckpt.latest_checkpoint(dit_run[0] / "checkpoints"), "ema")
    ema_b = ckpt.load_module_state(ckpt.latest_checkpoint(root), "ema")
    assert ema_a.keys() == ema_b.keys()
    assert all(torch.allclose(ema_a[k], ema_b[k], rtol=1e-5, atol=1e-6) for k in ema_a)  # float tolerance, as above


# --- export -----------------------------------------------------------------------------------------

def test_export_loads_in_the_pipeline(vae_run, dit_run, tmp_path, anny_body):
    from sigman.pipeline import SigmanPipeline

    out = export(vae_run[0], dit_run[0], tmp_path / "demo", body=anny_body)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["autoencoder.safetensors", "image_encoder.safetensors", "pipeline.json", "training.json",
                     "transformer.safetensors"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    provenance = json.loads((out / "training.json").read_text())  # names the runs, no machine paths
    assert provenance["vae_checkpoint"].split("/")[1:] == ["checkpoints", ckpt.latest_checkpoint(vae_run[0] / "checkpoints").name]
    assert not any(str(v).startswith("/") or str(tmp_path) in str(v) for v in provenance.values())
    pipe = SigmanPipeline.from_pretrained(out, device="cpu", body=anny_body)
    dit_state = json.loads((ckpt.latest_checkpoint(dit_run[0] / "checkpoints") / "state.json").read_text())
    assert pipe.vae.config.latent_scaling_factor == dit_state["latent_scaling_factor"]
    assert pipe.template.resolution == 32 and pipe.config.image_encoder == "tiny"
    ema = ckpt.load_module_state(ckpt.latest_checkpoint(dit_run[0] / "checkpoints"), "ema")
    assert all(torch.equal(v, ema[f"dit.{k}"]) for k, v in pipe.dit.state_dict().items())
    image = np.full((96, 64, 4), 255, np.uint8)  # a figure with its mask as alpha (no person to MediaPipe)
    image[..., 3] = 0
    image[10:90, 22:42] = (180, 60, 60, 255)
    result = pipe(image, "a_pose", steps=2, num_views=1, render_size=32)
    assert result.renders.shape == (1, 32, 32, 3)

    with pytest.raises(ExportError, match="trained on the latents of"):  # another VAE than the DiT's
        export(ckpt.list_checkpoints(vae_run[0] / "checkpoints")[0], dit_run[0], tmp_path / "bad", body=anny_body)
    with pytest.raises(ExportError, match="over the"):
        export(vae_run[0], dit_run[0], tmp_path / "small", max_file_mib=0.01, body=anny_body)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "small").exists()
    assert (tmp_path / "demo" / "pipeline.json").is_file()
    assert pipe.config.guidance == 3.5  # the PipelineConfig default unless the export names one
    guided = export(vae_run[0], dit_run[0], tmp_path / "guided", guidance=2.0, body=anny_body)
    assert json.loads((guided / "pipeline.json").read_text())["guidance"] == 2.0


# --- pieces ----------------------------------------------------------------------------------------

def test_checkpoint_files_keep_last_k_and_restore_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, 2, 10, 0.1))
    ema = EMA(model, 0.9)
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        ema.update(model)
        ckpt.save_checkpoint(root, step, modules={"model": model, "ema": ema.model}, optimizers={"optimizer": opt},
                             schedulers={"scheduler": sched}, state={"kind": "test"}, keep=2)
    after_save = torch.rand(3)
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000002", "step_00000003"]
    assert all(p.suffix in (".json", ".safetensors") for p in (root / "step_00000003").iterdir())  # no pickle
    (root / ".tmp-step_00000004").mkdir()  # a run killed mid-write
    assert ckpt.latest_checkpoint(root).name == "step_00000003"

    model2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: lr_multiplier(s, 2, 10, 0.1))
    state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(tmp_path), modules={"model": model2},
                                 optimizers={"optimizer": opt2}, schedulers={"scheduler": sched2})
    assert state["step"] == 3 and state["kind"] == "test"
    assert torch.equal(torch.rand(3), after_save)  # RNG restored to its state at the save
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    for p, p2 in zip(model.parameters(), model2.parameters()):
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], opt2.state[p2][key])
    assert sched2.state_dict()["last_epoch"] == 3 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert [p.name for p in ckpt.clean_incomplete(root)] == [".tmp-step_00000004"]
    with pytest.raises(ckpt.CheckpointError, match="no complete checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "nothing")


def test_stream_sampler_partitions_epochs_and_resumes():
    world = [StreamBatchSampler(10, 2, rank, 2, seed=1) for rank in range(2)]
    seen = [i for step in range(5) for s in world for _, i in s.batch(step)]
    assert sorted(seen[:10]) == list(range(10))  # 5 global batches of 4 cover epoch 0 ... into epoch 1
    assert sorted(seen[10:20]) == list(range(10))
    assert world[0].batch(3) == StreamBatchSampler(10, 2, 0, 2, seed=1, start_step=3).__iter__().__next__()
    assert world[0].batch(0) != StreamBatchSampler(10, 2, 0, 2, seed=2).batch(0)
    assert lr_multiplier(0, 10, 100, 0.1) == pytest.approx(0.1) and lr_multiplier(10, 10, 100, 0.1) == 1.0
    assert lr_multiplier(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_command_line_overrides_named_config():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    add_config_arguments(parser, train_vae.VAETrainConfig)
    args = parser.parse_args(["vae_tiny", "--batch_size", "3", "--shape-bank", "b.npz", "--disc_start", "7",
                              "--gradient-checkpointing", "--vae_overrides", '{"num_views": 3}', "--kl_weight", "0.5"])
    cfg = config_from_args(args, train_vae.CONFIGS, train_vae.VAETrainConfig)
    assert (cfg.batch_size, cfg.shape_bank, cfg.disc_start, cfg.gradient_checkpointing, cfg.kl_weight) == (3, "b.npz", 7, True, 0.5)
    assert cfg.vae_overrides == {"num_views": 3} and cfg.steps == train_vae.CONFIGS["vae_tiny"].steps
    assert train_vae.vae_config_of(cfg).num_views == 3 and train_vae.vae_config_of(cfg).gradient_checkpointing


def test_ssim_and_face_region(anny_body):
    from sigman.presets import resolve_pose
    from sigman.render import orbit_cameras
    from sigman.uv import build_uv_template

    x = torch.rand(2, 3, 24, 24)
    assert torch.allclose(ssim(x, x), torch.ones(2)) and (ssim(x, torch.rand(2, 3, 24, 24)) < 0.5).all()
    template = build_uv_template(anny_body, 32)
    head = head_point_index(template.skin_weights, anny_body.parents, anny_body.joint_names)
    assert 0 < len(head) < template.num_points // 2  # anny gives the head a large share of its UV layout
    transforms, _ = anny_body.pose_transforms(resolve_pose("a_pose"))
    from sigman.lbs import lbs_points

    points = lbs_points(template.positions[head], template.skin_weights[head], transforms)  # [1, Nh, 3]
    centre = points[0].mean(0).tolist()
    cams = orbit_cameras(2, 2.5, 0.0, (0.0, centre[1] - 0.6, 0.0), 0.8713, 48, 48)
    mask = region_pixel_mask(points, cams.viewmats[None], cams.Ks[None], 48, 48)  # [1, 2, 48, 48]
    assert mask.shape == (1, 2, 48, 48) and 0 < mask.mean() < 0.3
    rows = mask[0, 0].nonzero()[:, 0].float()
    assert rows.mean() < 24  # the head is in the upper half of the picture


def test_dit_runs_data_parallel_in_two_processes(data_dir, vae_run, tmp_path):
    """The DiT loop under torchrun with 2 processes (DDP over gloo on the CPU): both ranks take part,
    the global batch doubles, and rank 0 alone writes the logs and checkpoints."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    workspace = tmp_path / "dit_ddp"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(repo / "train" / "train_dit.py"), "dit_tiny", "--data", str(data_dir), "--vae", str(vae_run[0]),
           "--workspace", str(workspace), "--num_workers", "0"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "batch 2 x 2 processes" in done.stdout
    steps = [json.loads(line) for line in (workspace / "logs" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in steps if r.get("split") == "train"]
    assert train_steps == [1, 2, 3, 4]  # one writer: each step logged once
    assert ckpt.latest_checkpoint(workspace / ckpt.CHECKPOINT_DIR).name.endswith("4")


def test_fine_tune_from_a_model_folder(vae_run, dit_run, data_dir, bank_path, tmp_path, anny_body):
    """--init_weights starts from an exported model folder; --train_parts decoder leaves the encoder (and
    so the latents a DiT was trained on) exactly as it was; the DiT starts from the folder's weights."""
    from safetensors.torch import load_file

    folder = export(vae_run[0], dit_run[0], tmp_path / "demo", body=anny_body)
    shipped = load_file(str(folder / "autoencoder.safetensors"))
    workspace = tmp_path / "vae_ft"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anny_body_module, "load_anny_module", no_anny)
        train_vae.train(vae_config(data_dir, bank_path, workspace, init_weights=str(folder), train_parts="decoder",
                                   disc_start=-1, lr=1e-2, warmup_steps=1))
    tuned = ckpt.load_module_state(ckpt.latest_checkpoint(workspace / "checkpoints"), "model")
    decoder = [k for k in shipped if k.startswith(train_vae.DECODER_PREFIXES)]
    encoder = [k for k in shipped if not k.startswith(train_vae.DECODER_PREFIXES)]
    assert decoder and encoder
    assert all(torch.equal(tuned[k], shipped[k]) for k in encoder)
    assert sum(not torch.equal(tuned[k], shipped[k]) for k in decoder) > len(decoder) // 2

    model = train_dit.Denoiser(train_dit.SigmanDiT(train_dit.dit_config("demo", **train_dit.TINY_DIT)),
                               train_dit.build_image_encoder("tiny"))
    train_dit.load_init_weights(model, str(folder))
    dit_file = load_file(str(folder / "transformer.safetensors"))
    assert all(torch.equal(v, dit_file[k].float()) for k, v in model.dit.state_dict().items())
    with pytest.raises(SystemExit, match="--init_weights: weights file not found"):
        train_dit.load_init_weights(model, str(tmp_path))
    with pytest.raises(SystemExit, match="--train_parts must be one of"):
        train_vae.trainable_parameters(train_vae.SigmanVAE(train_vae.vae_config_of(train_vae.CONFIGS["vae_tiny"])), "head")

    history = train_dit.train(dit_config(data_dir, workspace, tmp_path / "dit_ft", init_weights=str(folder), steps=2,
                                         auto_latent_scaling=False))
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    tuned_folder = export(workspace, tmp_path / "dit_ft", tmp_path / "tuned", body=anny_body)
    provenance = json.loads((tuned_folder / "training.json").read_text())
    assert provenance["vae_init_weights"] == provenance["dit_init_weights"] == "demo"  # a name, not a machine path
    assert provenance["vae_train_parts"] == "decoder"
