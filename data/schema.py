"""The Kaggle GTZAN feature schema: column names, genres, segment convention."""

FEATURE_NAMES: tuple[str, ...] = (
    "chroma_stft_mean", "chroma_stft_var",
    "rms_mean", "rms_var",
    "spectral_centroid_mean", "spectral_centroid_var",
    "spectral_bandwidth_mean", "spectral_bandwidth_var",
    "rolloff_mean", "rolloff_var",
    "zero_crossing_rate_mean", "zero_crossing_rate_var",
    "harmony_mean", "harmony_var",
    "perceptr_mean", "perceptr_var",
    "tempo",
) + tuple(f"mfcc{i}_{stat}" for i in range(1, 21) for stat in ("mean", "var"))

FILENAME_COLUMN = "filename"
LENGTH_COLUMN = "length"
LABEL_COLUMN = "label"
COLUMNS: tuple[str, ...] = (FILENAME_COLUMN, LENGTH_COLUMN, *FEATURE_NAMES, LABEL_COLUMN)

GENRES: tuple[str, ...] = (
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
)

# What a table's label asks for, and the kinds of its features (data.columns reads them)
TASKS = ("auto", "classification", "regression")
NUMERIC, CATEGORICAL = "numeric", "categorical"
# --task auto: a label of numbers with more distinct values than this is a regression target.
REGRESSION_MIN_VALUES = 20

# The folds of GTZAN's published artist-filtered 3-fold split (data.artists): --test-fold K
ARTIST_FOLDS: tuple[int, ...] = (1, 2, 3)

SAMPLE_RATE = 22050
# Rows of at most this many samples are segments of a longer track (the Kaggle
# features_3_sec.csv has 66149 per row); their filenames end in ".K.wav".
SEGMENT_MAX_SAMPLES = 5 * SAMPLE_RATE

assert len(FEATURE_NAMES) == 57
