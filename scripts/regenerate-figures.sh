#!/usr/bin/env bash
# Regenerate the figures and CSVs of docs/figures/ from the sweep directories, each under its
# committed name: the commands of docs/reproductions.md, one per committed file.
#
#   scripts/regenerate-figures.sh [SWEEPS_DIR]   # SWEEPS_DIR holds sweeps/<spec name>/ (default: sweeps)
#
# FIGURES_DIR (default docs/figures) is where the files are written; CLIPZOO (default clipzoo) is
# the command, e.g. CLIPZOO="python -m runners.cli". A sweep directory that is absent is skipped
# with a line per file it would have written; the script fails only when a command fails.
#
# The reruns of this release write to the same names: when a new sweep finishes, running this
# script overwrites the superseded (pre-fix, 3-seed) files of its claim. Some committed files come
# from runs that are no longer on any machine (the records of claims 1-5); their commands are
# listed all the same and regenerate them once the sweep is re-run. Run it on finished sweeps
# (`clipzoo sweep status DIR`): plot and table aggregate the complete runs only, so a sweep in
# progress would give a figure of the seeds finished so far.
#
# Claim 0's sweep directory also holds the authors' script's runs (scripts/authors_ppo.py;
# docs/reproductions.md, claim 0), which plot and table read like any run.
set -euo pipefail

absolute() { if [[ $1 == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$PWD" "$1"; fi; }
SWEEPS=sweeps
FIGURES=docs/figures
if [[ $# -gt 0 ]]; then SWEEPS=$(absolute "${1%/}"); fi
if [[ -n ${FIGURES_DIR:-} ]]; then FIGURES=$(absolute "${FIGURES_DIR%/}"); fi
read -r -a CLIPZOO_COMMAND <<<"${CLIPZOO:-clipzoo}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root: the defaults and runners.cli are relative to it

# zoo SPEC SWEEP_DIR plot|table|heatmap ARGS...: run `clipzoo plot|table|heatmap ARGS...` if
# SWEEP_DIR exists, else print a "skipped" line for each file it would write (plot --out X.png
# writes X.png and X.csv; table --csv X and heatmap --out X write X).
zoo() {
    local spec=$1 dir=$2 previous="" arg
    shift 2
    if [[ -d $dir ]]; then
        mkdir -p "$FIGURES"
        "${CLIPZOO_COMMAND[@]}" "$@"
        return
    fi
    local outputs=()
    for arg in "$@"; do
        case $previous in
            --out) outputs+=("$arg"); if [[ $1 == plot ]]; then outputs+=("${arg%.*}.csv"); fi ;;
            --csv) outputs+=("$arg") ;;
        esac
        previous=$arg
    done
    for arg in "${outputs[@]}"; do
        echo "skipped $arg: $dir not found (run its spec first: clipzoo sweep configs/sweeps/$spec.yaml)"
    done
}

# Claim 0: ClipZoo's PPO + weight clipping and the authors' script, side by side.
S=$SWEEPS/repro_ppo_authors_check
zoo repro_ppo_authors_check "$S" plot "$S" --metric charts/episodic_return --out "$FIGURES/repro_ppo_authors_check.png"
zoo repro_ppo_authors_check "$S" table "$S" --metric charts/episodic_return --windows 6 \
    --csv "$FIGURES/repro_ppo_authors_check_runs.csv"

# Claim 1: policy collapse, learning rate annealed and constant.
M=(--metric charts/episodic_return --metric diagnostics/approx_kl_mean --metric diagnostics/weight_norm
   --metric diagnostics/saturated_frac_90)
S=$SWEEPS/repro_ppo_policy_collapse
zoo repro_ppo_policy_collapse "$S" plot "$S" "${M[@]}" --out "$FIGURES/repro_ppo_policy_collapse.png"
zoo repro_ppo_policy_collapse "$S" table "$S" "${M[@]}" --windows 10 --csv "$FIGURES/repro_ppo_policy_collapse_runs.csv"
C=$SWEEPS/repro_ppo_policy_collapse_constant_lr
zoo repro_ppo_policy_collapse_constant_lr "$C" plot "$C/Hopper-v5" "${M[@]}" --out "$FIGURES/repro_ppo_policy_collapse_constant_lr.png"
zoo repro_ppo_policy_collapse_constant_lr "$C" plot "$C/Walker2d-v5" "${M[@]}" --out "$FIGURES/repro_ppo_policy_collapse_constant_lr_walker2d.png"
zoo repro_ppo_policy_collapse_constant_lr "$C" table "$C/Hopper-v5" "${M[@]}" --windows 10 --csv "$FIGURES/repro_ppo_policy_collapse_constant_lr_runs.csv"
zoo repro_ppo_policy_collapse_constant_lr "$C" table "$C/Walker2d-v5" "${M[@]}" --windows 10 --csv "$FIGURES/repro_ppo_policy_collapse_constant_lr_walker2d_runs.csv"

# Claims 2 and 3: DQN and Rainbow at replay ratios 1 and 8 on MinAtar, and their gradient covariance
# (seed 1 of each variant, early: the first matrix from step 10000 on, late: step 100000).
M=(--metric charts/episodic_return --metric gradcov/mean_abs_offdiag --metric diagnostics/weight_norm)
S=$SWEEPS/repro_minatar_rr_dqn
zoo repro_minatar_rr_dqn "$S" plot "$S" "${M[@]}" --out "$FIGURES/repro_minatar_rr_dqn.png"
zoo repro_minatar_rr_dqn "$S" table "$S" "${M[@]}" --windows 10 --csv "$FIGURES/repro_minatar_rr_dqn_runs.csv"
G=$S/MinAtar_Breakout-v1
zoo repro_minatar_rr_dqn "$S" heatmap "$G/rr1_adam/seed_1" "$G/rr1_adam+wc/seed_1" "$G/rr8_adam/seed_1" "$G/rr8_adam+wc/seed_1" --step 10000 --out "$FIGURES/repro_minatar_rr_dqn_breakout_heatmaps_early.png"
zoo repro_minatar_rr_dqn "$S" heatmap "$G/rr1_adam/seed_1" "$G/rr1_adam+wc/seed_1" "$G/rr8_adam/seed_1" "$G/rr8_adam+wc/seed_1" --step 100000 --out "$FIGURES/repro_minatar_rr_dqn_breakout_heatmaps_late.png"
G=$S/MinAtar_Seaquest-v1
zoo repro_minatar_rr_dqn "$S" heatmap "$G/rr1_adam/seed_1" "$G/rr1_adam+wc/seed_1" "$G/rr8_adam/seed_1" "$G/rr8_adam+wc/seed_1" --step 10000 --out "$FIGURES/repro_minatar_rr_dqn_seaquest_heatmaps_early.png"
zoo repro_minatar_rr_dqn "$S" heatmap "$G/rr1_adam/seed_1" "$G/rr1_adam+wc/seed_1" "$G/rr8_adam/seed_1" "$G/rr8_adam+wc/seed_1" --step 100000 --out "$FIGURES/repro_minatar_rr_dqn_seaquest_heatmaps_late.png"
S=$SWEEPS/repro_minatar_rr_rainbow
zoo repro_minatar_rr_rainbow "$S" plot "$S" "${M[@]}" --out "$FIGURES/repro_minatar_rr_rainbow.png"
zoo repro_minatar_rr_rainbow "$S" table "$S" "${M[@]}" --metric wc/clipped_fraction --windows 10 --csv "$FIGURES/repro_minatar_rr_rainbow_runs.csv"
G=$S/MinAtar_Breakout-v1
zoo repro_minatar_rr_rainbow "$S" heatmap "$G/rr1_adam/seed_1" "$G/rr1_adam+wc/seed_1" "$G/rr8_adam/seed_1" "$G/rr8_adam+wc/seed_1" --step 10000 --out "$FIGURES/repro_minatar_rr_rainbow_breakout_heatmaps_early.png"
zoo repro_minatar_rr_rainbow "$S" heatmap "$G/rr1_adam/seed_1" "$G/rr1_adam+wc/seed_1" "$G/rr8_adam/seed_1" "$G/rr8_adam+wc/seed_1" --step 100000 --out "$FIGURES/repro_minatar_rr_rainbow_breakout_heatmaps_late.png"

# Claim 4: successive regularization on CartPole and MountainCar.
S=$SWEEPS/repro_successive_reg
zoo repro_successive_reg "$S" plot "$S" --metric eval/episodic_return --metric charts/episodic_return --out "$FIGURES/repro_successive_reg_episodic_return.png"
zoo repro_successive_reg "$S" plot "$S" --metric diagnostics/effective_rank --out "$FIGURES/repro_successive_reg_effective_rank.png"
zoo repro_successive_reg "$S" table "$S" --metric eval/episodic_return --metric charts/episodic_return --metric diagnostics/effective_rank \
    --metric diagnostics/weight_norm --metric diagnostics/dead_units_frac --windows 10 --csv "$FIGURES/repro_successive_reg_runs.csv"

# Claim 4b: successive regularization on LunarLander, evaluation returns.
S=$SWEEPS/repro_successive_reg_lunarlander
zoo repro_successive_reg_lunarlander "$S" plot "$S" --metric eval/episodic_return --out "$FIGURES/repro_successive_reg_lunarlander_eval_return.png"
zoo repro_successive_reg_lunarlander "$S" table "$S" --metric eval/episodic_return --metric charts/episodic_return \
    --metric diagnostics/effective_rank --metric diagnostics/weight_norm --metric diagnostics/dead_units_frac --windows 10 \
    --csv "$FIGURES/repro_successive_reg_lunarlander_runs.csv"

# Claim 5: weight clipping's kappa on CartPole.
S=$SWEEPS/repro_wc_kappa_cartpole
zoo repro_wc_kappa_cartpole "$S" plot "$S" --metric charts/episodic_return --out "$FIGURES/repro_wc_kappa_episodic_return.png"
zoo repro_wc_kappa_cartpole "$S" plot "$S" --metric losses/q_values --out "$FIGURES/repro_wc_kappa_q_values.png"
zoo repro_wc_kappa_cartpole "$S" table "$S" --metric charts/episodic_return --metric losses/q_values \
    --metric wc/clipped_fraction --windows 10 --csv "$FIGURES/repro_wc_kappa_runs.csv"

# Claim 6: plasticity on Lyle et al.'s classification MDPs.
S=$SWEEPS/repro_lyle_classification
zoo repro_lyle_classification "$S" plot "$S" --metric plasticity/plasticity --out "$FIGURES/repro_lyle_classification_plasticity.png"
zoo repro_lyle_classification "$S" table "$S" --metric plasticity/plasticity --metric charts/episodic_return \
    --metric diagnostics/weight_norm --metric diagnostics/dead_units_frac --windows 10 --csv "$FIGURES/repro_lyle_classification_runs.csv"

# Claim 7: ReDo at replay ratio 8 on MinAtar Breakout.
S=$SWEEPS/redo_minatar_breakout
zoo redo_minatar_breakout "$S" plot "$S" --metric charts/episodic_return --metric diagnostics/dormant_frac_0.1 \
    --out "$FIGURES/redo_minatar_breakout.png"
zoo redo_minatar_breakout "$S" table "$S" --metric charts/episodic_return --metric diagnostics/dormant_frac_0.1 \
    --metric diagnostics/dormant_frac_0.025 --metric redo/recycled_frac --metric diagnostics/weight_norm --windows 10 \
    --csv "$FIGURES/redo_minatar_breakout_runs.csv"
