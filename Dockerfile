# whisper-for-subs: the web app on NVIDIA GPUs or on the CPU, from one image.
# A plain Debian base: the only CUDA library CTranslate2 needs, cuBLAS 12 (it uses no cuDNN), comes from
# PyPI's nvidia-cublas-cu12 wheel, and the GPU driver from the host through the NVIDIA Container Toolkit.
# Debian 12's Python is 3.11, the version every pinned wheel here is built for.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian's package versions change with every point release, so they are not pinned. PyAV's wheel
# carries FFmpeg's libraries: no ffmpeg package is needed.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Packages first, code later: a code change does not reinstall them.
# torch is only imported by the silero-vad package (the VAD itself runs on ONNX Runtime): its CPU
# build, the same pinned version, saves gigabytes of CUDA libraries that nothing here uses. With
# TORCH_INDEX_URL empty, pip takes it from its own configuration instead (as the project's CI does).
# (Every version is pinned: hadolint's DL3013 misreads the optional --index-url.)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements.txt requirements-gpu.txt ./
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0 \
    && pip install -r requirements.txt -r requirements-gpu.txt

# CTranslate2 loads libcublas.so.12 by name: the wheel's folder is put on the library path. The
# NVIDIA Container Toolkit gives the container the driver's compute libraries.
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN useradd --create-home --uid 1000 app \
    && mkdir -p /data/models /data/results \
    && chown -R app:app /data
COPY --chown=app:app . .
USER 1000:1000

# Models are downloaded into HF_HOME; uploads and results live in WHISPER_RESULTS_DIR: both are volumes.
ENV HF_HOME=/data/models \
    WHISPER_RESULTS_DIR=/data/results \
    WHISPER_HOST=0.0.0.0 \
    WHISPER_PORT=7860
VOLUME ["/data/models", "/data/results"]
EXPOSE 7860

# /health answers only once every worker has loaded its model; a first download can take minutes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:7860/health"]

CMD ["python", "app.py"]
