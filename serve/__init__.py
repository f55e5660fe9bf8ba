"""`gsearch serve`: an exported model over HTTP (a FastAPI app run by uvicorn).

Routes
- GET  /health         {"status": "ok", "backend": ..., "audio_ready": bool}
- GET  /model          the export's model.json (classes, features, test accuracy, versions)
- POST /predict        JSON feature rows (numbers; text or null for a table's model) -> one
                       prediction per row
- POST /predict/audio  a multipart upload (field `file`) -> one prediction for the audio file
- GET  /docs           the API as one HTML page (docs.py: no CDN); the schema is at /openapi.json
- the Open Inference Protocol (KServe v2, also spoken by Triton), model name "gsearch":
  GET /v2, /v2/health/live, /v2/health/ready, /v2/models/gsearch, /v2/models/gsearch/ready;
  POST /v2/models/gsearch/infer: tensor "features" FP32 [N, n_features] (a model of numbers) or
  one tensor per feature (FP32 [N], BYTES [N] for a text feature) -> "probabilities" FP32
  [N, n_classes] and "label" BYTES [N], or a regression's "prediction" FP32 [N]; JSON or the
  binary tensor data extension (v2.py).

A prediction, on every REST route: a classifier's {"genre", "probabilities" (every genre, most
likely first), "top_k": [{"genre", "probability"}, ...]}, a regression's {"value"}, and for an
upload its "file" and "windows".

One pipeline: each request's body becomes a FeatureBatch (requests.py; uploads.py for audio),
the model's Answer for it is rendered (responses.py), and every refusal is a RequestError
(errors.py, messages.py): JSON {"error": "one line that says what to do"} with a 4xx status, or
503 with Retry-After when too many heavy requests wait (limits.py); 5xx otherwise only for a bug,
whose traceback goes to the server log, never to the client.

Modules: app.py (the routes over one State, create_app), requests.py (the request contract:
pydantic models, the JSON schema of /openapi.json, the converter), values.py (the value types),
v2.py (the Open Inference Protocol's request models and binary tensor data), messages.py (what
each refusal says), uploads.py (audio uploads), responses.py (answers), limits.py (what bounds
memory and keeps /health answering: rows x features, body bytes and time), docs.py (/docs),
errors.py, run.py (`serve`: uvicorn, --workers).
"""

from gsearch.serve.app import (DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_ROWS, DEFAULT_MAX_UPLOAD_MB,
                               State, create_app)
from gsearch.serve.errors import RequestError
from gsearch.serve.limits import MAX_WAITING
from gsearch.serve.messages import FLOAT32_MAX
from gsearch.serve.requests import DEFAULT_MAX_VALUES, DEFAULT_TOP_K, FeatureBatch, feature_batch
from gsearch.serve.run import serve
from gsearch.serve.v2 import V2_MODEL

__all__ = ["create_app", "serve", "State", "RequestError", "FeatureBatch", "feature_batch",
           "DEFAULT_MAX_ROWS", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_MAX_VALUES",
           "DEFAULT_BODY_TIMEOUT_S", "DEFAULT_TOP_K", "FLOAT32_MAX", "MAX_WAITING", "V2_MODEL"]
