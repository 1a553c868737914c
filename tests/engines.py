"""A Whisper engine for fault tests: it kills its own worker process on a marked unit.

It lives in its own module so that spawned worker processes can import it by name.
"""

import os
import signal

from transcriber import WhisperTranscriber

POISON_INDEX = 666


class CrashingTranscriber(WhisperTranscriber):
    def transcribe(self, units, options):
        if any(unit.index == POISON_INDEX for unit in units):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().transcribe(units, options)


class ShortOfMemoryTranscriber(WhisperTranscriber):
    """Runs out of memory on any batch of more than 2 windows, as a small GPU would."""

    def transcribe(self, units, options):
        if min(len(units), options.batch_size or self.batch_size) > 2:
            raise RuntimeError("CUDA failed with error out of memory")
        return super().transcribe(units, options)


class ForgetfulTranscriber(WhisperTranscriber):
    """Leaves the first unit of a file empty in its batched pass, as Whisper sometimes leaves a window
    it cannot make out; decoding it again works as the real engine's does."""

    def transcribe(self, units, options):
        results = super().transcribe(units, options)
        return [[] if unit.index == 0 else segments for unit, segments in zip(units, results)]


class FailingTranscriber(WhisperTranscriber):
    """Raises inside its worker process on a marked unit, as a bug in the engine would."""

    def transcribe(self, units, options):
        if any(unit.index == POISON_INDEX for unit in units):
            raise ValueError("this unit breaks the engine")
        return super().transcribe(units, options)
