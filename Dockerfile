# whisper-for-subs: the web app on NVIDIA GPUs (or the CPU).
# CUDA 12 runtime: the ctranslate2 4.8 wheel loads libcublas.so.12 from it. The wheel no longer
# uses cuDNN (no libcudnn in its libraries), so the smaller image without cuDNN is enough.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian/Ubuntu package versions change with every base image update, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Packages first, code later: a code change does not reinstall them.
COPY requirements.txt .
# torch is only imported by the silero-vad package (the VAD itself runs on ONNX Runtime): its CPU
# build, the same pinned version, saves gigabytes of CUDA libraries that nothing here uses.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install -r requirements.txt

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
