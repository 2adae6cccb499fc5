"""The output contract's tables: their columns, in order (README, "Outputs")."""

PREDICTION_COLUMNS = ("model", "image_id", "top1", "top1_name", "top1_prob", "correct")
PREDICTION_DTYPES = ("str", "str", "int64", "str", "float64", "boolean")
PER_IMAGE_COLUMNS = ("model", "image_id", "block", "head", "distance_px", "prefix_mass", "entropy")
DISTANCE_COLUMNS = ("model", "block", "head", "distance_px", "std_px", "n_images")
ACCURACY_COLUMNS = ("model", "n", "correct", "accuracy", "low", "high")
CKA_COLUMNS = ("model_a", "block_a", "model_b", "block_b", "features", "cka", "cka_se", "n_images", "n_groups")
TOKEN_NORM_COLUMNS = ("model", "image_id", "block", "tokens", "n_tokens", "norm_mean", "norm_max", "n_high_norm", "threshold")
