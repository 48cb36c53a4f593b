#!/usr/bin/env bash
# How tests/data/legacy_v0_* were made: with the code of commit 8b51262 (before issue 23 changed the checkpoint's
# contract), so that tests/test_legacy_checkpoint.py proves a checkpoint written then still loads, predicts the same
# rows and resumes. Run from a checkout of that commit:  bash /path/to/this/file /path/to/this/repo
set -euo pipefail
repo="$1"; work="$(mktemp -d)"
python - "$work" <<'PY'
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, ".")
from pathlib import Path
import train_classifier
from dataloader.demo import generate_demo
work = Path(sys.argv[1])
demo = generate_demo(work / "demo", seed=7, scale=0.25)
overrides = [f"paths.demo_dir={demo}", f"paths.data_dir={work / 'none'}", f"paths.cache_dir={work / 'cache'}",
             f"paths.runs_dir={work / 'runs'}", f"paths.submissions_dir={work / 'subs'}", "testing.testing=true",
             "testing.data_samples_for_testing=24", "testing.testing_epochs=2", "data.num_workers=1",
             "data.demo_seed=7", "data.demo_scale=0.25", "model.transfer_learning=false", "trainer.batch_size=8",
             "model.family=tiny", "model.type=tiny_dscnn", "testing.testing_model=tiny_dscnn"]
assert train_classifier.main(["--set=" + o for o in overrides]) == 0
PY
cp "$work"/runs/*/checkpoints/last.pt "$repo/tests/data/legacy_v0_tiny.pt"
python -c "import sys; sys.path.insert(0, '$repo/tests'); from pathlib import Path; from legacy_audio import write_legacy_audio; write_legacy_audio(Path('$work/audio'))"
ck="$repo/tests/data/legacy_v0_tiny.pt"
python predict.py --checkpoint "$ck" --audio-dir "$work/audio" --out "$repo/tests/data/legacy_v0_predict.csv"
python predict.py --checkpoint "$ck" --audio-dir "$work/audio" --smooth 1 --row-seconds 2.5 \
  --out "$repo/tests/data/legacy_v0_predict_2.5s_smooth1.csv"
python detect.py --checkpoint "$ck" --audio-dir "$work/audio" --out-dir "$work/detect" --hop-s 2.5 --min-score 0 \
  --threshold 0.5
cp "$work/detect/scores.csv" "$repo/tests/data/legacy_v0_detect_scores_hop2.5.csv"
cp "$work/detect/detections.csv" "$repo/tests/data/legacy_v0_detect_detections_hop2.5.csv"
