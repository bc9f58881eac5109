#!/usr/bin/env bash
# The main job: set up, train the from-scratch transformer on AG News, evaluate it on the
# validation split, plot its attention and export a SavedModel that serves raw strings.
# AGNEWS_DATA picks the data (a CSV path or tfds:ag_news_subset); RUN_DIR the run folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
DATA=${AGNEWS_DATA:-../shared/data/ag_news/train.csv}
RUN_DIR=${RUN_DIR:-runs/agnews}
TFATTN=.venv/bin/tfattn
$TFATTN train agnews --data "$DATA" --run-dir "$RUN_DIR" "$@"
$TFATTN attention --run "$RUN_DIR" "Oil prices rose sharply as stocks fell on Wall Street" \
  --out "$RUN_DIR/attention.png" --layers 0
$TFATTN export --run "$RUN_DIR" --out "$RUN_DIR/export" --overwrite
$TFATTN predict --run "$RUN_DIR" "NASA launches a new probe to Mars" "The Lakers beat the Celtics in overtime"
echo "done: metrics, confusion matrix and attention plot in $RUN_DIR, SavedModel in $RUN_DIR/export"
