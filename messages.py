"""What the people who use the doors (the page, the APIs, the command line, the watched folder) are told
when something cannot be done, in one place, so that every door says the same thing in the same words.

A `UserError` carries one such message, written to follow "error: " (as the command line prints it);
`sentence` is the same message as the page and the APIs show it.
"""

from audio import AudioError
from job_state import JobCancelled, JobFailed
from links import LinkError


class UserError(ValueError):
    """A request that cannot be done as given. `param` names the input at fault, `status` is the HTTP status
    an API answers with, `code` a short name for programs (OpenAI's error codes)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    @property
    def sentence(self) -> str:
        """The message as a sentence, for the page and the APIs."""
        return as_sentence(self.message)


class Cancelled(UserError):
    """The job was cancelled by the person who started it."""

    def __init__(self) -> None:
        super().__init__("cancelled", status=499)


def as_sentence(message: str) -> str:
    """A message written to follow "error: " as a sentence for the page or an API."""
    message = message.strip()
    return message[:1].upper() + message[1:] + ("" if message.endswith((".", "?", "!", ":")) else ".")


SERVER_DRAINING = "the server is restarting and takes no new jobs: try again in a minute"
QUEUE_FULL = "too many jobs are waiting: try again in a moment"
NOT_UPLOADED = "this file was not uploaded to this page, or its job has ended: upload it again"
NOTHING_CHOSEN = "choose an audio or video file, record something, or paste a link, first"
NO_SPEECH = "no speech found: the recording holds silence, music or noise only, so there are no subtitles"
NO_SUCH_JOB = "there is no such job for this browser: it has expired, or was started in another browser"
INTERRUPTED = "the server stopped while this job ran: press Run again to start it over with the same files"
BODY_TOO_SLOW = "the upload was too slow: the server waits at most {seconds:g} s for the rest of it"


def too_large(limit_bytes: int) -> str:
    """A file over the size limit."""
    return f"the file is larger than this server takes ({limit_bytes / 1e6:.3g} MB)"


def not_media_name(name: str) -> str:
    """A file whose name says it is no audio or video."""
    return f"{name} is not an audio or video file: choose a recording or a film"


def out_of_range(name: str, value, low: float, high: float) -> str:
    """A number outside its range, or no number at all."""
    return f"{name} must be a number from {low:g} to {high:g}, not {value!r}"


def unknown_model(name: str, known: list[str]) -> str:
    """A model this server does not serve."""
    return f"the model {name!r} does not exist here; choose one of {', '.join(known)}"


def cannot_translate(model: str) -> str:
    """A model that cannot translate, asked to."""
    return f"the model {model} cannot translate; choose a multilingual model such as large-v3, or transcribe"


def english_only(model: str, wanted: str) -> str:
    """An English-only model asked for another language (`wanted`)."""
    return f"the model {model} is English-only: for {wanted}, choose a multilingual model such as base"


def explain(error: BaseException) -> UserError:
    """The UserError a door shows for what stopped a job; raises `error` again where it is a bug."""
    if isinstance(error, UserError):
        return error
    if isinstance(error, AudioError):
        reason = error.args[0].split(": ", 1)[-1]
        return UserError(f"this file cannot be transcribed: {reason}", param="file")
    if isinstance(error, LinkError):
        return UserError(f"this link cannot be used: {error}", param="link")
    if isinstance(error, JobCancelled):
        return Cancelled()
    if isinstance(error, JobFailed):
        return UserError(str(error), status=500)
    raise error
