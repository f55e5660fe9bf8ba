"""Every key gsearch writes on a study or a trial, in one place.

A study and its trials are gsearch's record of a search: the dashboard shows the user
attributes, `gsearch studies`, `report`, `export-best` and the workers read them back. A key
is named here once and imported wherever it is written or read, so that a reader of any
module finds what a study holds, and a typo cannot silently write a second key.

>>> TRIAL_SEED, PRUNED_REASON, CURVE
('seed', 'pruned_reason', 'gsearch:curve')
"""

# -- study user attributes --------------------------------------------------------------------
# The data fingerprint and the protocol (protocol.Protocol.fingerprint writes them; the
# protocol's own fields, test_size, val_size, split_seed and cv, are keys under their names).
DATA_SHA256 = "data_sha256"    # SHA-256 of the feature table the study searched
DATA_PATH = "data_path"        # that table's path, for export-best without --data
N_ROWS = "n_rows"              # its rows
CLASSES = "classes"            # its classes, in label order
FEATURES = "features"          # its feature columns, in the model's input order
KINDS = "kinds"                # each feature's kind, numeric or categorical (absent: all numeric)
LABEL = "label_column"         # its label column
SEP = "separator"              # its column separator, when one was given (--sep; else sniffed)
MISSING_WORDS = "missing_words"  # the words read as an empty cell, when given (--missing; else
                               # data.columns.MISSING), as a comma list ("": only an empty cell)
TASK = "task"                  # classification or regression (absent: classification)
SPACE_ROWS = "space_rows"      # the training rows its search space was sized to (space.SearchSpace)
SPACE_OPTIONS = "space_options"  # what else the built-in space follows: task, class weights, linear
SPACE = "space"                # a space of one's own: its MODULE:FUNCTION (--space); absent: built-in
OBJECTIVES = "objectives"      # objectives.Objectives.to_dict(): names and limits
EXPORT = "export"              # what export-best last measured (the dashboard's note)

# -- trial user attributes (shown by the dashboard) ------------------------------------------
TRIAL_SEED = "seed"                       # the training seed of the trial's model
DEVICE = "device"                         # where it trained
CONFIG = "config"                         # TrialConfig.describe(): every setting on one line
N_PARAMS = "n_params"                     # trainable parameters
TRAIN_SECONDS = "train_seconds"           # training time, all folds
EPOCHS_RUN = "epochs_run"                 # epochs trained before it ended
TRAIN_LOSS = "train_loss"                 # training loss per epoch
LATENCY_MS = "latency_ms"                 # single-row CPU latency (objective or limit)
FOLD_ACCURACIES = "fold_accuracies"       # per-fold validation accuracy under --cv K
PRUNED_REASON = "pruned_reason"           # why a pruned trial stopped (pruner, deadline, NaN)
DEADLINE = "deadline"                     # how PRUNED_REASON starts for a trial --timeout stopped
PRUNER = "pruner"                         # ... and for a trial the pruner stopped
INTERRUPTED = "interrupted"               # a Ctrl-C or SIGTERM ended it (state FAIL)
RETRY_OF = "retry_of"                     # the number of the dead trial this one runs again

# -- trial system attributes (gsearch's bookkeeping; not shown as user attributes) -----------
CURVE = "gsearch:curve"                   # accuracy per epoch in a multi-objective study
TRIAL_CONFIG = "gsearch:config"           # TrialConfig.to_dict(): what the trial trained, whole
WORKER = "gsearch:worker"                 # the worker process that created the trial
TAKEN_BY = "gsearch:taken_by:"            # + worker name: a waiting trial that worker took
OWN_PREFIX = "gsearch:"                   # every system attribute above starts with it
RETRY_HISTORY = "retry_history"           # Optuna's own record of a retried trial's ancestors
