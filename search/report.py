"""gsearch report: a study's plots as PNG (matplotlib) and interactive HTML (plotly), with
Optuna's visualization module, plus a short markdown summary. Works offline: the HTML
files share one plotly.min.js written beside them, and no PNG goes through kaleido.

A multi-objective study adds its Pareto front (accuracy against its cost); the other plots
are drawn from its score alone (objectives.score_study)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from gsearch import GsearchError
from gsearch.search import records
from gsearch.search.objectives import OBJECTIVES, Objectives, feasible, score_study
from gsearch.search.selection import pareto_front
from gsearch.search.protocol import Protocol
from gsearch.search.requests import study_options
from gsearch.search.storage import open_storage
from gsearch.search.study import load_study, set_log_level, state_counts

DPI = 100
# plot name -> (title, PNG size in inches)
PLOTS = {
    "optimization_history": ("{score} per trial", (10, 5.5)),
    "intermediate_values": ("Learning curves: {score} per epoch", (10, 5.5)),
    "param_importances": ("Which hyperparameters mattered (fANOVA importance)", (10, 5.5)),
    "parallel_coordinate": ("Hyperparameters of the completed trials", (14, 6)),
}
# added for a study with several objectives
PARETO_PLOTS = {"pareto_front": ("Pareto front: {score} against cost", (10, 6))}


def load_finished_study(storage: str, name: str | None) -> optuna.Study:
    """The study `name` of the storage URL `storage` (None: its only study, else gtzan-mlp),
    which must have a completed trial (something to plot)."""
    set_log_level()
    study = load_study(open_storage(storage, must_exist=True), name)
    if not state_counts(study)["complete"]:
        raise GsearchError(f"study '{study.study_name}' has no completed trial yet; run 'gsearch run "
                           f"{study_options(study.study_name, storage)}' until one completes")
    return study


def default_folder(study_name: str) -> Path:
    """Where `gsearch report` writes without --out: report/<study>, one folder per study, so
    that one study's report never overwrites another's. Characters that a folder name cannot
    hold safely (a slash, a space) become '_'."""
    name = re.sub(r"[^\w.-]", "_", study_name)
    if name in ("", ".", ".."):
        name = "_" * max(1, len(name))
    return Path("report") / name


def plots_of(study: optuna.Study) -> dict:
    """The plots drawn for a study: PLOTS, and PARETO_PLOTS when it has several objectives,
    titled with the study's score ("validation accuracy", "validation RMSE", ...)."""
    plots = {**PLOTS, **PARETO_PLOTS} if len(study.directions) > 1 else PLOTS
    score = Objectives.of(study).score_title
    titles = {name: title.format(score=score) for name, (title, _) in plots.items()}
    return {name: (titles[name][0].upper() + titles[name][1:], size)
            for name, (_, size) in plots.items()}


def _figures(study: optuna.Study, plots) -> dict:
    """Plot name -> what optuna's `plots` module (matplotlib or plotly) draws for it."""
    objectives = Objectives.of(study)
    target = {"target_name": objectives.score_title}
    if objectives.multi:
        single = score_study(study)
        names = [objectives.title(n) for n in objectives.names]
        return {**_figures(single, plots),
                "pareto_front": lambda: plots.plot_pareto_front(study, target_names=names)}
    return {
        "optimization_history": lambda: plots.plot_optimization_history(study, **target),
        "intermediate_values": lambda: plots.plot_intermediate_values(study),
        "param_importances": lambda: plots.plot_param_importances(study, **target),
        "parallel_coordinate": lambda: plots.plot_parallel_coordinate(study, **target),
    }


def _style_learning_curves(ax, study: optuna.Study) -> None:
    """One line per trial labelled 'Trial<n>': color by outcome instead of a 200-entry legend."""
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    best = study.best_trial.number
    styles = {TrialState.COMPLETE: ("tab:blue", 0.45, 1.0), TrialState.PRUNED: ("0.55", 0.45, 0.8)}
    seen = set()
    for line in ax.get_lines():
        number = int(line.get_label().removeprefix("Trial"))
        state = states[number]
        color, alpha, width = styles.get(state, ("tab:orange", 0.6, 0.8))
        label = state.name.lower()
        if number == best:
            color, alpha, width, label = "tab:red", 1.0, 2.2, f"best (trial {best})"
            line.set_zorder(3)
        line.set(color=color, alpha=alpha, linewidth=width, marker="", markersize=0,
                 label=label if label not in seen else "_nolegend_")
        seen.add(label)
    objectives = Objectives.of(study)
    if seen:
        ax.legend(loc="lower right" if objectives.maximize else "upper right")
    ax.set_xlabel("epoch")
    ax.set_ylabel(objectives.score_title)


def _png(study: optuna.Study, name: str, draw, path: Path) -> None:
    import matplotlib   # lazy: only the PNGs need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # lazy: as above

    title, size = plots_of(study)[name]
    # optuna draws most plots in ggplot style; parallel coordinates need a plain background
    style = "default" if name == "parallel_coordinate" else "ggplot"
    with plt.style.context(style), matplotlib.rc_context({"figure.figsize": size,
                                                                 "text.parse_math": False}):
        ax = draw()
        fig = ax.figure
        if name == "intermediate_values":
            _style_learning_curves(ax, score_study(study))
        if name == "pareto_front":
            ax.set_yscale("log")   # costs span orders of magnitude
        if name == "parallel_coordinate":
            for lines in ax.collections:  # optuna's Blues draws the worst trials white
                lines.set_cmap("viridis_r")  # best trials darkest
        ax.set_title("")  # optuna's generic centred title
        ax.set_title(f"{study.study_name}: {title}", loc="left")
        fig.set_size_inches(*size)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
        plt.close(fig)


def _html(study: optuna.Study, name: str, draw, path: Path) -> None:
    fig = draw()
    fig.update_layout(title=f"{study.study_name}: {plots_of(study)[name][0]}")
    if name == "intermediate_values":
        fig.update_layout(xaxis_title="epoch", yaxis_title=Objectives.of(study).score_title)
    if name == "pareto_front":
        fig.update_yaxes(type="log")
    # "directory": one plotly.min.js beside the pages instead of 4 MB in each, no CDN needed
    fig.write_html(path, include_plotlyjs="directory", full_html=True)


def _pareto_lines(study: optuna.Study) -> list[str]:
    objectives = Objectives.of(study)
    front = pareto_front([t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                          if feasible(t)], objectives)
    cost = OBJECTIVES[objectives.cost]
    limits = "".join(f"; {OBJECTIVES[n].metric} at most {v:g}" for n, v in objectives.limits().items())
    return [f"Pareto front ({objectives.describe()}{limits}): {len(front)} trials", "",
            f"| trial | {objectives.score_title} | {cost.metric} |", "|---|---|---|",
            *(f"| {t.number} | {t.values[0]:.4f} | {cost.show(t.values[1])} |" for t in front), ""]


def _summary(study: optuna.Study, storage_url: str, skipped: dict[str, str]) -> str:
    counts = state_counts(study)
    objectives = Objectives.of(study)
    multi = objectives.multi
    try:
        best = score_study(study).best_trial
    except ValueError:   # Optuna: no feasible trial
        raise GsearchError(f"study '{study.study_name}' has no completed trial within its limits "
                           f"({Objectives.of(study).options()}); run more trials") from None
    attrs = study.user_attrs
    lines = [f"# Study `{study.study_name}`", "",
             f"Storage `{storage_url}`, data `{attrs.get(records.DATA_PATH, '?')}` "
             f"({attrs.get(records.N_ROWS, '?')} rows, sha256 {str(attrs.get(records.DATA_SHA256, '?'))[:12]}).", "",
             f"Protocol: {Protocol.of(study).describe()}.", "",
             f"{len(study.trials)} trials: {counts['complete']} complete, {counts['pruned']} pruned, "
             f"{counts['fail']} failed, {counts['running']} running.", "",
             *(_pareto_lines(study) if multi else []),
             f"**Best: trial #{best.number}, {objectives.score_title} {best.value:.4f}**", "",
             "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in best.params.items()]
    export = attrs.get(records.EXPORT)
    if export:
        scores = export.get("test_scores") or {"accuracy": export["test_accuracy"],
                                               "macro-F1": export["test_macro_f1"]}
        shown = ", ".join(f"test {name} {value:.4f}" for name, value in scores.items())
        lines += ["", f"export-best (trial #{export['trial_number']}): {shown} on "
                      f"{export['n_test']} held-out rows."]
    lines += ["", "## Plots", ""]
    for name, (title, _) in plots_of(study).items():
        if name in skipped:
            lines.append(f"- {name}: not drawn ({skipped[name]})")
        else:
            lines += [f"### {title}", "", f"![{name}]({name}.png)", "",
                      f"Interactive: [{name}.html]({name}.html)", ""]
    return "\n".join(lines) + "\n"


def write_report(study: optuna.Study, out_dir: Path, storage_url: str) -> list[Path]:
    """Write <plot>.png, <plot>.html and summary.md to out_dir; return the files written."""
    complete = state_counts(study)["complete"]
    if not complete:
        raise GsearchError(f"study '{study.study_name}' has no completed trial yet; "
                           "run 'gsearch run' until one completes")
    import optuna.visualization as plotly_plots   # lazy: plotly and matplotlib load for drawing only
    import optuna.visualization.matplotlib as mpl_plots   # lazy: as above

    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = {} if complete > 1 else {"param_importances": "needs at least 2 completed trials"}
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # matplotlib, when every trial drawn has one value (a single completed trial): the
        # axis is widened by itself and the plot is right, the warning only alarms
        warnings.filterwarnings("ignore", "Attempting to set identical low and high ylims",
                                UserWarning)
        pngs, htmls = _figures(study, mpl_plots), _figures(study, plotly_plots)
        for name in plots_of(study):
            if name not in skipped:
                _png(study, name, pngs[name], out_dir / f"{name}.png")
                _html(study, name, htmls[name], out_dir / f"{name}.html")
                written += [out_dir / f"{name}.png", out_dir / f"{name}.html"]
    summary = out_dir / "summary.md"
    summary.write_text(_summary(study, storage_url, skipped))
    return written + [out_dir / "plotly.min.js", summary]
