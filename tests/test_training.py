"""The shared training loop: device names, schedule, exact resume, refusing other settings, budgets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from foundation.devices import check_device, parse_device
from foundation.training import (
    Checkpoint,
    LoopConfig,
    ResumeError,
    RunOptions,
    TrainSettings,
    build_schedule,
    pick_preset,
    seed_everything,
    train_loop,
)

# -- devices ---------------------------------------------------------------------------------


def test_device_names(monkeypatch):
    assert parse_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda' was asked for, but torch sees no CUDA GPU"):
        parse_device("cuda")
    with pytest.raises(ValueError, match="'cuda:1' was asked for"):
        parse_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_device("auto") == torch.device("cuda")
    assert parse_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"'cuda:2' was asked for, but torch sees 2 CUDA GPU\(s\)"):
        parse_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "CPU", "cuda:", "cuda:x", "cpu:0", "cuda0", " cpu", "", "mps"])
def test_unknown_device_names_are_named(bad):
    with pytest.raises(ValueError, match=f"unknown device {bad!r}; use auto, cpu, cuda or cuda:N"):
        check_device(bad)
    with pytest.raises(ValueError, match="unknown device"):
        LoopConfig(epochs=1, lr=1e-3, device=bad)


def test_bad_loop_settings_and_presets_are_named():
    with pytest.raises(ValueError, match="epochs must be at least 1, got 0"):
        LoopConfig(epochs=0, lr=1e-3)
    with pytest.raises(ValueError, match="lr must be positive, got -1"):
        LoopConfig(epochs=1, lr=-1)
    with pytest.raises(ValueError, match="max_minutes must be positive or None, got 0"):
        LoopConfig(epochs=1, lr=1e-3, max_minutes=0)
    with pytest.raises(ValueError, match="warmup_share must lie in"):
        LoopConfig(epochs=1, lr=1e-3, warmup_share=1.5)
    with pytest.raises(ValueError, match="unknown toy preset 'huge'; choose from default, demo"):
        pick_preset({"default": 1, "demo": 2}, "huge", "toy")


@dataclasses.dataclass(frozen=True)
class ToySettings(TrainSettings):
    epochs: int = 2
    lr: float = 1e-3
    hidden: int = 16
    eval_limit: int = 100
    resume_checkpoint: bool = True
    max_minutes: float | None = 5.0

    TRAINS = "toy"
    RUN_SETTINGS = (*TrainSettings.RUN_SETTINGS, "eval_limit")
    FIXED_LOOP = {"finish_epoch": True}
    PRESET_FIELDS = {"demo": {"epochs": 1, "resume_checkpoint": False}, "default": {}}


def test_a_trainers_settings_give_its_presets_loop_and_learning_settings():
    assert ToySettings.presets() == {"demo": ToySettings(epochs=1, resume_checkpoint=False), "default": ToySettings()}
    assert ToySettings.demo(lr=0.1) == ToySettings(epochs=1, lr=0.1, resume_checkpoint=False)
    with pytest.raises(ValueError, match="unknown toy preset 'huge'; choose from default, demo"):
        ToySettings.preset("huge")
    loop = ToySettings.demo(device="cpu", threads=1, seed=3).loop_config()
    assert loop == LoopConfig(
        epochs=1, lr=1e-3, max_minutes=5.0, device="cpu", threads=1, seed=3, checkpoint=False, finish_epoch=True
    )
    # the loop records its own settings; where and how long a run goes may change on resume
    assert ToySettings.demo(threads=1, eval_limit=5).learning_settings() == {"hidden": 16}
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        ToySettings(device="gpu")
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        ToySettings(epochs=0)


def test_schedule_warms_up_linearly_then_anneals_to_zero():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_schedule(opt, LoopConfig(epochs=1, lr=0.1, warmup_steps=10), total_steps=50)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert lrs[5] == pytest.approx(0.1 / 25 + (0.1 - 0.1 / 25) * 5 / 10)
    assert lrs[10] == pytest.approx(0.1) and max(lrs) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine: never rises again
    assert lrs[30] == pytest.approx(0.05)  # half way through the cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    plain = build_schedule(torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=0.1), LoopConfig(1, 0.1), 20)
    assert isinstance(plain, torch.optim.lr_scheduler.CosineAnnealingLR)


# -- a tiny model --------------------------------------------------------------------------------


class Noisy(torch.utils.data.Dataset):
    """Augmentation drawn from torch's global RNG, as torchvision's transforms do."""

    def __init__(self, n: int = 40):
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(6), self.y[i]


class Task:
    def __init__(self, hidden: int = 16):
        self.model = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 3))

    def parameters(self):
        return self.model.parameters()

    def loss(self, batch, device):
        x, y = (t.to(device) for t in batch)
        logits = self.model(x)
        return nn.functional.cross_entropy(logits, y), {"acc": float((logits.argmax(1) == y).float().mean())}


CFG = LoopConfig(epochs=3, lr=0.02, weight_decay=0.01, warmup_share=0.2, clip_grad_norm=1.0, device="cpu", threads=1)


def run(tmp_path, cfg=CFG, *, resume=False, workers=0, hidden=16, n=40, **kwargs):
    seed_everything(cfg.seed)
    task = Task(hidden)
    loader = torch.utils.data.DataLoader(
        Noisy(n), batch_size=8, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(cfg.seed)
    )
    ck = Checkpoint(tmp_path, "toy-last", settings={"hidden": hidden}, preprocessing={})
    result = train_loop(task, loader, cfg, RunOptions(checkpoint=ck, resume=resume, progress=False, **kwargs))
    return task.model.state_dict(), result


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize("stop_after", [3, 5, 7, 12])  # mid-epoch, at an epoch's end, mid-epoch 2 and 3
def test_an_interrupted_run_resumed_ends_where_an_uninterrupted_one_does(tmp_path, stop_after):
    whole, full = run(tmp_path / "whole")
    assert full.stopped == "finished" and full.steps == 15 and len(full.history) == 3
    _, first = run(tmp_path / "parts", dataclasses.replace(CFG, max_steps=stop_after))
    assert first.stopped == "max_steps" and first.steps == stop_after
    resumed_state, resumed = run(tmp_path / "parts", resume=True)
    assert resumed.resumed and resumed.steps == 15 and resumed.stopped == "finished"
    for key, value in whole.items():
        torch.testing.assert_close(resumed_state[key], value, rtol=0, atol=1e-6, msg=key)
    assert without_seconds(resumed.history) == without_seconds(full.history)  # the accuracy averages too


def test_resume_is_exact_with_loader_workers(tmp_path):
    whole, _ = run(tmp_path / "whole", dataclasses.replace(CFG, epochs=2), workers=1)
    run(tmp_path / "parts", dataclasses.replace(CFG, epochs=2, max_steps=3), workers=1)
    resumed, result = run(tmp_path / "parts", dataclasses.replace(CFG, epochs=2), workers=1, resume=True)
    assert result.steps == 10
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)


def test_resume_refuses_other_learning_settings_and_names_them(tmp_path):
    run(tmp_path, dataclasses.replace(CFG, max_steps=2))
    with pytest.raises(ResumeError, match=r"other settings \(loop.lr: 0.02 there, 0.03 here\)"):
        run(tmp_path, dataclasses.replace(CFG, lr=0.03), resume=True)
    with pytest.raises(ResumeError, match="task.hidden: 16 there, 8 here"):
        run(tmp_path, resume=True, hidden=8)
    with pytest.raises(ResumeError, match="data.batches_per_epoch: 5 there, 6 here"):  # other data
        run(tmp_path, resume=True, n=48)
    # where and how long it runs may change
    _, result = run(tmp_path, dataclasses.replace(CFG, threads=2, max_minutes=5.0, amp=False), resume=True)
    assert result.resumed and result.steps == 15


def test_a_finished_run_resumes_to_itself_and_a_missing_checkpoint_starts_afresh(tmp_path):
    state, done = run(tmp_path / "a", resume=True)  # nothing to resume: from scratch
    assert not done.resumed and done.steps == 15
    again_state, again = run(tmp_path / "a", resume=True)
    assert again.resumed and again.steps == 15 and again.history == done.history
    for key, value in state.items():
        assert torch.equal(again_state[key], value)


def test_time_budget_stops_after_a_step_or_finishes_the_epoch(tmp_path):
    _, result = run(tmp_path / "a", dataclasses.replace(CFG, max_minutes=1e-9))
    assert result.stopped == "time_budget" and result.steps == 1 and result.history == []
    assert result.last_loss is not None
    _, result = run(tmp_path / "b", dataclasses.replace(CFG, max_minutes=1e-9, finish_epoch=True))
    assert result.stopped == "time_budget" and result.steps == 5 and len(result.history) == 1


def test_early_stopping_on_the_validation_loss(tmp_path):
    losses = iter([1.0, 0.5, 0.7, 0.6, 0.9, 0.4])
    best = []
    cfg = dataclasses.replace(CFG, epochs=6, patience=2)
    _, result = run(tmp_path, cfg, val_fn=lambda model, device: next(losses), on_best=lambda m, r: best.append(r))
    assert result.stopped == "early_stopped" and result.epochs_done == 4
    assert result.best == 0.5 and result.best_epoch == 2 and [r["epoch"] for r in best] == [1, 2]
    assert [h["val_loss"] for h in result.history] == [1.0, 0.5, 0.7, 0.6]
    _, again = run(tmp_path, cfg, resume=True)  # an early-stopped run stays stopped
    assert again.stopped == "early_stopped" and again.steps == result.steps


def test_a_budget_that_holds_fewer_epochs_anneals_the_schedule_over_those():
    from foundation.training import _Loop

    seed_everything(0)
    loader = torch.utils.data.DataLoader(Noisy(40), batch_size=8)  # 5 batches an epoch
    cfg = dataclasses.replace(CFG, epochs=8, max_minutes=1.0)
    loop = _Loop(Task(16), loader, cfg, RunOptions(progress=False))
    for _ in range(5):  # the first epoch's steps
        loop.optimizer.step()
        loop.scheduler.step()
    loop.state.epoch, loop.state.step = 1, 5
    # 58.2 s of the budget (its margin) less the 8 s spent hold 11 steps of 4 s and the validations
    # (2 s) of the three epochs they reach into: 16 steps, three epochs and a batch of the fourth
    loop.fit_to_budget(step_s=4.0, val_s=2.0, spent_s=8.0)
    assert loop.state.planned_steps == 16 and loop.planned_epochs() == 4
    for _ in range(11):
        loop.optimizer.step()
        loop.scheduler.step()
    assert loop.scheduler.get_last_lr()[0] < 1e-9  # annealed at the last step the budget holds
    loop.fit_to_budget(step_s=0.1, val_s=0.0, spent_s=8.0)
    assert loop.state.planned_steps == 16  # fitted once


def test_a_fitted_schedule_ends_in_its_last_epoch_with_a_validation(tmp_path, monkeypatch):
    import foundation.training as training

    def fit(self, step_s, val_s, spent_s):  # as a budget holding 7 steps would
        self.state.planned_steps = 7
        self.scheduler = training.build_schedule(self.optimizer, self.cfg, 7)
        for _ in range(self.state.step):
            self.scheduler.step()

    monkeypatch.setattr(training._Loop, "fit_to_budget", fit)
    monkeypatch.setattr(training, "FIT_AFTER", 1)
    vals = []
    cfg = dataclasses.replace(CFG, epochs=4, max_minutes=60.0)
    _, result = run(tmp_path, cfg, val_fn=lambda model, device: vals.append(1) or float(len(vals)))
    assert result.stopped == "finished" and result.steps == 7 and result.epochs_done == 2
    assert result.epochs_planned == 1.4 and len(vals) == 2  # the cut epoch was validated
    assert result.history[-1]["batches"] == 2 and result.history[-1]["lr"] < 1e-9


def test_the_budget_is_fitted_after_the_first_epoch_when_a_second_would_not_end_within_it():
    from foundation.training import _Loop

    loader = torch.utils.data.DataLoader(Noisy(40), batch_size=8)
    loop = _Loop(Task(16), loader, dataclasses.replace(CFG, epochs=8, max_minutes=1.0), RunOptions(progress=False))
    loop.state.epoch = 1
    assert not loop.fit_now(spent_s=20.0)  # a second epoch ends within the 60 s: fitted after it
    assert loop.fit_now(spent_s=35.0)  # it would not: fitted now, while the schedule can still anneal
    loop.state.epoch = 2
    assert loop.fit_now(spent_s=20.0)  # FIT_AFTER epochs done


def test_a_budget_that_holds_no_step_more_stops_at_the_epoch_end():
    from foundation.training import _Loop

    loader = torch.utils.data.DataLoader(Noisy(40), batch_size=8)
    loop = _Loop(Task(16), loader, dataclasses.replace(CFG, epochs=2, max_minutes=1.0), RunOptions(progress=False))
    loop.state.epoch, loop.state.step = 1, 5
    loop.fit_to_budget(step_s=9.0, val_s=10.0, spent_s=55.0)
    assert loop.state.planned_steps == 5 and loop.schedule_done()


def test_a_budget_that_holds_every_epoch_changes_nothing(tmp_path):
    _, result = run(tmp_path, dataclasses.replace(CFG, max_minutes=5.0))
    assert result.epochs_planned == CFG.epochs == result.epochs_done


# -- two trainings into one models directory (the demo trains two side by side) ---------------------


def _save_many(models_dir: str, prefix: str, n: int) -> None:
    from foundation.modelfiles import ModelFile, save_model

    for i in range(n):
        save_model(models_dir, f"{prefix}{i}", ModelFile({}, {"i": i}, {}))


def test_two_processes_saving_into_one_models_directory_keep_every_entry(tmp_path):
    import multiprocessing

    from foundation.modelfiles import read_manifest

    ctx = multiprocessing.get_context("fork")  # torch is already imported, and no thread runs yet
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), p, 15)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert set(read_manifest(tmp_path)["models"]) == {f"{p}{i}" for p in "ab" for i in range(15)}


def test_the_demo_trains_a_model_in_a_second_process_while_its_block_runs(tmp_path, capsys):
    from pathlib import Path

    from cli.demo import _beside

    out = tmp_path / "written.txt"
    with _beside("attribute model", False, Path.write_text, (out, "trained"), {}):
        pass  # the demo's own steps run here meanwhile
    assert out.read_text() == "trained"  # the child's work is done when the block is left
    assert "[demo] attribute model: building in a second process" in capsys.readouterr().out
    with _beside("attribute model", True, Path.write_text, (tmp_path / "never.txt", "x"), {}):
        pass
    assert not (tmp_path / "never.txt").exists() and "attribute model: cached" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError), _beside("attribute model", False, Path.read_text, (tmp_path / "no",), {}):
        pass  # the child's error comes back once the block is through
