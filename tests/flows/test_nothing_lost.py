"""Nothing lost: an export never deletes what preflight did not write, and every fit ends with its final weights on
disk, through the command where a user meets them."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.flows.conftest import QUICK

PREFLIGHT = str(Path(sys.executable).parent / "preflight")
RELATIVE_LAST = "runs/dpo/version_0/checkpoints/last.ckpt"  # as `preflight export runs/dpo` finds and prints it


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links not followed) with a digest of its bytes: what must stay untouched."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def trained(preflight, workdir):
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK).code == 0
    (workdir / "mine").mkdir()
    (workdir / "mine" / "notes.txt").write_text("my own notes\n")
    (workdir / "runs" / "sibling").mkdir()
    (workdir / "runs" / "sibling" / "keep.txt").write_text("another run\n")
    return workdir / "runs/dpo/version_0/checkpoints/last.ckpt"


@pytest.mark.parametrize(
    "target, why",
    [
        (".", "is the current folder or holds it"),
        ("runs", "holds runs/dpo/version_0/checkpoints/last.ckpt, which the export reads or belongs to the run"),
        ("runs/dpo/version_0", "holds runs/dpo/version_0/checkpoints/last.ckpt"),
        ("runs/dpo/version_0/checkpoints", "holds runs/dpo/version_0/checkpoints/last.ckpt"),
        ("mine", "holds files preflight did not write (no preflight_export.json)"),
        ("mine/notes.txt", "is a file, not a folder"),
    ],
)
def test_export_refuses_a_folder_it_did_not_write_and_touches_nothing(preflight, workdir, trained, target, why):
    before = tree(workdir)
    result = preflight("export", "runs/dpo/version_0/checkpoints/last.ckpt", target)
    assert result.code == 2
    (line,) = result.preflight_lines()
    assert line.startswith(f"preflight: error: {target}: {why}") and line.endswith("(nothing written)")
    assert tree(workdir) == before  # the user's files, the checkpoint and the sibling run, byte for byte
    assert not [p for p in os.listdir(workdir) if p.startswith(".")]  # no staging folder left either


def test_export_writes_into_a_new_or_empty_folder_and_replaces_only_its_own(preflight, workdir, trained):
    (workdir / "empty").mkdir()
    for target in ("empty", "new/deeper"):
        result = preflight("export", "runs/dpo", target)
        assert result.code == 0
        assert result.out.splitlines()[-1] == f"preflight: exported {RELATIVE_LAST} (step 2) to {target}"
        mark = json.loads((workdir / target / "preflight_export.json").read_text())
        assert mark["step"] == 2 and mark["checkpoint"] == str(trained)
    # a second fit, then a re-export over the first: replaced, with the new step
    assert (
        preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3", "--ckpt_path", "last").code
        == 0
    )
    result = preflight("export", "runs/dpo", "empty")
    assert result.code == 0 and result.out.splitlines()[-1].endswith("(step 3) to empty")
    assert json.loads((workdir / "empty" / "preflight_export.json").read_text())["step"] == 3
    assert not [p for p in os.listdir(workdir) if p.startswith(".")]  # no staging folder left beside it
    assert (workdir / "mine" / "notes.txt").read_text() == "my own notes\n"


KILL_AT = {
    # the process kills itself with SIGKILL at the named moment of the export
    "writing": "import preflight.export as e; real = e.trained_model\n"
    "def trained_model(m):\n    os.kill(os.getpid(), signal.SIGKILL)\ne.trained_model = trained_model",
    "before_swap": "import preflight.export_target as t\n"
    "t._exchange = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)",
}


@pytest.mark.parametrize("moment", sorted(KILL_AT))
def test_a_killed_export_leaves_the_earlier_export_whole(preflight, workdir, trained, moment):
    assert preflight("export", "runs/dpo", "out").code == 0
    before = tree(workdir / "out")
    script = (
        f"import os, signal\n{KILL_AT[moment]}\nfrom preflight.cli import main\nmain(['export', 'runs/dpo', 'out'])"
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert tree(workdir / "out") == before  # the earlier export, whole
    again = subprocess.run([PREFLIGHT, "export", "runs/dpo", "out"], cwd=workdir, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not [p for p in os.listdir(workdir) if p.startswith(".")]  # the killed export's staging folder is gone
    assert tree(workdir / "out").keys() == before.keys()


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_the_shipped_config_ends_with_its_final_step_on_disk(preflight, workdir):
    """configs/dpo.yaml checkpoints every 50 steps; a fit of 7 with checkpoints every 5 ends at 7, and so does
    last.ckpt, which export ships and a resume continues from."""
    args = ["fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "7"]
    args += ["--trainer.callbacks.init_args.every_n_train_steps", "5", "--trainer.val_check_interval", "5"]
    result = preflight(*args)
    assert result.code == 0
    last = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    assert "preflight: fit finished at step 7" in result.preflight_lines()
    assert f"  checkpoint: {last} (step 7)" in result.out.splitlines()
    assert step_of(last) == 7
    exported = preflight("export", "runs/dpo", "out")
    assert exported.out.splitlines()[-1] == f"preflight: exported {RELATIVE_LAST} (step 7) to out"
    resumed = preflight(*args, "--trainer.max_steps", "8", "--ckpt_path", "last")
    assert f"preflight: resuming {RELATIVE_LAST} (step 7)" in resumed.preflight_lines()
    assert step_of(last) == 8


@pytest.mark.parametrize("config", ["kto", "lists"])
def test_configs_without_a_checkpoint_callback_or_validation_end_with_last_ckpt(preflight, workdir, config):
    data = {"kto": "unpaired_val.jsonl", "lists": "lists_val.jsonl"}[config]
    args = ["fit", "--config", f"configs/{config}.yaml", "--data.train", f"assets/data/{data}", "--data.val", "null"]
    result = preflight(
        *args, "--trainer.max_steps", "3", "--data.batch_size", "4", "--trainer.enable_progress_bar", "false"
    )
    assert result.code == 0, result.err[-2000:]
    last = workdir / f"runs/{config}/version_0/checkpoints/last.ckpt"
    assert step_of(last) == 3
    assert f"  checkpoint: {last} (step 3)" in result.out.splitlines()
    assert not any(line.startswith("  checkpoints: ") for line in result.out.splitlines())


def test_ckpt_path_last_with_nothing_to_resume_says_so(preflight, workdir):
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "1", "--ckpt_path", "last")
    assert result.code == 0
    assert (
        "preflight: --ckpt_path last: no checkpoint under runs/dpo/version_*/checkpoints yet: starting a new run"
        in result.preflight_lines()
    )
    assert step_of(workdir / "runs/dpo/version_0/checkpoints/last.ckpt") == 1


def test_resuming_with_another_loss_finds_the_run_and_is_refused(preflight, workdir):
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK).code == 0
    last = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--model.loss", "ipo", "--ckpt_path", "last")
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        f"preflight: error: {RELATIVE_LAST} was trained with loss.name='dpo', this config sets 'ipo' "
        "(--allow_changed_config true to use it anyway)"
    )
    assert sorted(os.listdir(workdir / "runs")) == ["dpo"] and step_of(last) == 2


# ---------------------------------------------------------------------- no training on no signal
SHARED = " ".join(["The lamp ships in a box with a long manual about every part of it."] * 4)
QUICK_FILES = ["--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false", "--data.val", "null"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_identical_after_truncation_are_dropped_and_counted(preflight, workdir):
    """Completions that differ only past max_length would train at ln 2 with zero gradient."""
    distinct = [{"prompt": f"Q{i}:", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(6)]
    same = [{"prompt": f"Q{i}:", "chosen": SHARED + " Yes.", "rejected": SHARED + " No."} for i in range(3)]
    write_jsonl(workdir / "pairs.jsonl", distinct + same)
    result = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        "--data.train",
        "pairs.jsonl",
        *QUICK_FILES,
        "--data.max_length",
        "32",
        "--data.batch_size",
        "2",
    )
    assert result.code == 0, result.err[-2000:]
    assert "preflight: data: train pairs.jsonl (6 pairs), val: none" in result.preflight_lines()
    assert (
        "preflight: data: pairs.jsonl: 6 of 9 pairs kept, 3 dropped because chosen and rejected were identical "
        "after truncation"
    ) in result.preflight_lines()


def test_list_scores_decided_in_float32_and_repeated_completions_in_lists(preflight, workdir):
    good = [{"prompt": f"Q{i}:", "completions": [f" a{i}", f" b{i}", f" c{i}"], "scores": [2, 1, 0]} for i in range(4)]
    tied = {"prompt": "Q:", "completions": [" a", " b"], "scores": [1.0, 1.0 + 1e-12]}  # equal in float32
    cut = {"prompt": "Q:", "completions": [SHARED + " a", SHARED + " b", " c"], "scores": [2, 1, 0]}
    write_jsonl(workdir / "lists.jsonl", good + [tied, cut])
    result = preflight(
        "fit", "--config", "configs/lists.yaml", "--data.train", "lists.jsonl", *QUICK_FILES, "--data.max_length", "32"
    )
    assert result.code == 0, result.err[-2000:]
    assert (
        "preflight: data: lists.jsonl: 4 of 6 lists kept, 1 with all scores tied dropped, 1 dropped because two "
        "differently-scored completions were identical after truncation"
    ) in result.preflight_lines()


@pytest.mark.parametrize(
    "row, problem",
    [
        (
            {"prompt": "Q:", "completions": [" a", " b"], "scores": [1e39, 0]},
            "field 'scores', score 1 (1e+39) is beyond float32's range (±3.403e+38), which the loss computes in",
        ),
        (
            {"prompt": "Q:", "completions": [" a", " b", " a"], "scores": [2, 1, 0]},
            "field 'completions': completion 3 repeats completion 1 with another score (0 against 2)",
        ),
    ],
)
def test_list_values_the_format_cannot_hold_are_refused_with_file_and_line(preflight, workdir, row, problem):
    good = {"prompt": "Q0:", "completions": [" a", " b"], "scores": [1, 0]}
    write_jsonl(workdir / "lists.jsonl", [good, good, row])
    result = preflight("fit", "--config", "configs/lists.yaml", "--data.train", "lists.jsonl", *QUICK_FILES)
    assert result.code == 2
    assert result.preflight_lines()[-1] == f"preflight: error: lists.jsonl, line 3: {problem}"
    assert not (workdir / "runs").exists()


def test_a_pair_margin_beyond_float32_is_refused(preflight, workdir):
    write_jsonl(workdir / "pairs.jsonl", [{"prompt": "Q:", "chosen": " a", "rejected": " b", "margin": -1e40}])
    result = preflight("fit", "--config", "configs/dpo.yaml", "--data.train", "pairs.jsonl", *QUICK_FILES)
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        "preflight: error: pairs.jsonl, line 1: field 'margin' (-1e+40) is beyond float32's range (±3.403e+38), "
        "which the loss computes in"
    )


def test_lipo_with_scores_float32_cannot_weigh_names_the_cause(preflight, workdir):
    rows = [{"prompt": f"Q{i}:", "completions": [f" a{i}", f" b{i}"], "scores": [130, 1]} for i in range(2)]
    write_jsonl(workdir / "lists.jsonl", rows)
    args = ["--data.pairs_from_lists", "list", "--model.loss", "lipo_lambda"]
    result = preflight("fit", "--config", "configs/lists.yaml", "--data.train", "lists.jsonl", *QUICK_FILES, *args)
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        "preflight: error: lipo_lambda: a list scored up to 130 weighs its pairs by 2^130, beyond float32 "
        "(scores below 128 fit); rescale the scores"
    )


# ---------------------------------------------------------------------- every config error names its key or file
@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.loss", "{name: dpo, beta: abc}"], "model.loss.beta (loss 'dpo') must be a number, got 'abc'"),
        (["--data.max_length", "0"], "data.max_length must be >= 1 (or null: no limit), got 0"),
        (["--data.batch_size", "abc"], "data.batch_size: Expected a <class 'int'>. Got value: abc"),
        (
            ["--data.val", "assets/data/lists_val.jsonl"],
            "the splits mix kinds: data.train (assets/data/val.jsonl) holds pairs; data.val "
            "(assets/data/lists_val.jsonl) holds lists; give data.val in pairs too",
        ),
    ],
)
def test_config_errors_name_their_key(preflight, workdir, args, message):
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, *args)
    assert result.code == 2 and result.preflight_lines()[-1] == f"preflight: error: {message}"
    assert not (workdir / "runs").exists()


def test_list_settings_name_their_key_and_a_loss_named_then_set_keeps_its_name(preflight, workdir):
    args = ["fit", "--config", "configs/lists.yaml", "--data.train", "assets/data/lists_val.jsonl", *QUICK_FILES]
    result = preflight(*args, "--data.pairs_from_lists", "best")
    assert result.code == 2 and result.preflight_lines()[-1] == (
        "preflight: error: data.pairs_from_lists: expected one of all, best_worst, consecutive, list; got 'best'"
    )
    result = preflight(
        *args, "--data.pairs_from_lists", "list", "--model.loss", "plackett_luce", "--model.loss.beta", "0.5"
    )
    assert result.code == 0, result.err[-2000:]
    hparams = (workdir / "runs/lists/version_0/hparams.yaml").read_text()
    assert "name: plackett_luce" in hparams and "beta: 0.5" in hparams


def test_a_unpaired_run_with_a_pair_validation_file_names_the_validation_split(preflight, workdir):
    result = preflight("fit", "--config", "configs/kto.yaml", "--data.val", "assets/data/val.jsonl")
    assert result.code == 2 and result.preflight_lines()[-1] == (
        "preflight: error: the splits mix kinds: data.train (assets/data/unpaired_train.jsonl) holds unpaired; "
        "data.val (assets/data/val.jsonl) holds pairs; give data.val in unpaired too "
        "(data.unpair: true turns pairs into unpaired rows)"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "model:\n  init_args:\n    learning_rate: !!python/name:os.system\n",
            "mine.yaml, line 3, column 20: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/name:os.system'",
        ),
        (
            "model:\n  init_args:\n    learning_rate: [1, 2\n",
            "mine.yaml, line 4, column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)",
        ),
    ],
)
def test_yaml_errors_name_their_file_and_line(preflight, workdir, text, message):
    (workdir / "mine.yaml").write_text(text)
    result = preflight("fit", "--config", "configs/dpo.yaml", "--config", "mine.yaml", *QUICK)
    assert result.code == 2 and result.preflight_lines()[-1] == f"preflight: error: {message}"


def test_a_prompts_file_without_prompts_names_the_missing_prompt(workdir):
    from preflight.datamodules.errors import PreferenceDataError
    from preflight.rounds.prompts import read_prompts

    write_jsonl(workdir / "prompts.jsonl", [{"prompt": "Hi"}, {"question": "Hello?"}])
    with pytest.raises(PreferenceDataError) as raised:
        read_prompts("prompts.jsonl")
    assert str(raised.value) == (
        "prompts.jsonl, line 2: missing field 'prompt' (the row's fields: question); a prompts file holds "
        '{"prompt": ...} rows, pairs or lists'
    )


def test_a_checkpoint_write_that_fails_names_the_path_and_keeps_the_previous_one(preflight, workdir):
    """A full disk, made here by a file-size limit on the process (RLIMIT_FSIZE: any write past it fails, as on a full
    disk): the command ends in one line naming the checkpoint, exit 2, and the previous last.ckpt is whole."""
    import resource

    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK).code == 0
    last = workdir / RELATIVE_LAST
    size = last.stat().st_size

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    args = [PREFLIGHT, "fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3", "--ckpt_path", "last"]
    result = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=300, preexec_fn=limited)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("preflight: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith(f"preflight: error: {last}: the checkpoint could not be written (")
    assert errors[0].endswith("); the previous one is unchanged")
    assert step_of(last) == 2 and last.stat().st_size == size


def test_a_target_filled_by_the_user_while_the_export_writes_is_left_alone(preflight, workdir, trained, monkeypatch):
    """The target is checked again at the swap: files that appeared in it meanwhile are the user's, and stay."""
    import preflight.export as export

    real = export.trained_model

    def user_writes_meanwhile(module):
        (workdir / "late").mkdir()
        (workdir / "late" / "mine.txt").write_text("written while the export ran\n")
        return real(module)

    monkeypatch.setattr(export, "trained_model", user_writes_meanwhile)
    result = preflight("export", "runs/dpo", "late")
    assert result.code == 2
    assert result.preflight_lines()[-1].startswith("preflight: error: late: holds files preflight did not write")
    assert (workdir / "late" / "mine.txt").read_text() == "written while the export ran\n"
    assert not [p for p in os.listdir(workdir) if p.startswith(".")]  # the staging folder is gone
