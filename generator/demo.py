"""`make demo`: run the main job on the bundled examples and show what came out."""

from __future__ import annotations

import sys
from pathlib import Path

from generator.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(*args: str) -> None:
    print(f"\n$ slm-deploy {' '.join(args)}", flush=True)
    try:
        cli.main(args=list(args), prog_name="slm-deploy", standalone_mode=False)
    except SystemExit as exc:  # `plan` exits 2 when a plan cannot fit: that is shown, not fatal
        if exc.code not in (0, None, 2) or (args[0] == "review" and exc.code):
            raise


def main(out: str = "out") -> None:
    out_dir = ROOT / out
    out_dir.mkdir(exist_ok=True)
    run("plan", "--model", "phi-4-mini-instruct", "--gpu", "l4")
    run("plan", "--model", "qwen3-8b", "--runtime", "ollama", "--cpu", "--cpus", "8", "--memory-gib", "16")
    run("plan", "--model", "qwen3-14b")
    run("plan", "--model", "qwen3-32b", "--gpu", "l4", "--context", "32768")
    bundles = out_dir / "bundles"
    run("bundle", str(EXAMPLES / "fleet.yaml"), "--out", str(bundles), "--tar")
    run("verify", str(bundles / "store-0001"))
    for stack in ("dev", "staging", "prod"):
        run("preview", stack, "--out", str(out_dir / "manifests" / stack))
    # The security review of everything generated above: zero findings is the bar.
    review_args = ["review", str(bundles)]
    for stack in ("dev", "staging", "prod"):
        review_args += ["--stack", stack]
    run(*review_args, "--sarif", str(out_dir / "review.sarif"))


if __name__ == "__main__":
    main(*sys.argv[1:2])
