"""`autopilot serve`: the run's ONNX model over HTTP (FastAPI + uvicorn +
ONNX Runtime). This package never imports torch; see app.py for the API."""
