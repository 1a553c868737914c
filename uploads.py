"""The page's uploads: each one in a folder of its own, and each taken by one job only.

Gradio's own upload route names an upload's folder after its content, so that two people who send the
same recording share one file, and the first job to take it leaves the other with nothing. This route
(mounted in front of Gradio's, at the same address, with Gradio's own parser) puts every upload in a
new folder under `results/uploads/`, whoever else sends the same bytes. A job then moves its upload into
its own folder; nothing else is ever taken as a job's input (see `UploadDesk.take`).
"""

import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

import fastapi
from fastapi.responses import JSONResponse
from gradio import route_utils
from gradio import routes as gradio_routes

import messages
from results import UPLOADS

log = logging.getLogger("whisper_for_subs")
UPLOAD_ROUTE = "/gradio_api/upload"


class UploadDesk:
    """Where the page's uploads arrive and which job took which."""

    def __init__(self, results_dir: Path, max_file_size: int):
        self.root = results_dir / UPLOADS
        self.max_file_size = max_file_size
        self.waiting: set[str] = set()  # uploaded and not yet taken; Gradio's own record (upload_file_set)
        # (browser session, an upload's path) -> the copy its job took, for Transcribe pressed again
        self._taken: dict[tuple[str, str], Path] = {}
        self._lock = threading.Lock()

    async def receive(self, request: fastapi.Request, upload_id: str | None = None) -> JSONResponse:
        """The upload route: the files of one request, each kept under a new folder; their paths."""
        folder = self.root / uuid.uuid4().hex
        try:
            paths, _, _ = await route_utils.upload_fn(
                request,
                folder,
                self.max_file_size,
                upload_id,
                force_move=True,
                upload_progress=gradio_routes.file_upload_statuses if upload_id else None,
            )
        except route_utils.MultiPartException as error:
            shutil.rmtree(folder, ignore_errors=True)
            return JSONResponse(
                {"detail": error.message}, status_code=413 if "maximum allowed size" in error.message else 400
            )
        except (fastapi.HTTPException, OSError) as error:  # a name that cannot be a file's
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("upload refused: %s", error)
            return JSONResponse({"detail": "The file's name cannot be used: rename the file."}, status_code=400)
        except BaseException:  # a body cut off: nothing of it stays
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self.waiting.update(paths)
        return JSONResponse(paths)

    def take(self, path: str, session: str, target: Path) -> Path:
        """The job's input: the upload at `path` moved to `target`, in the job's folder; or, where this
        browser session transcribes the same upload again, a copy of what its earlier job took. Any other
        path is refused with NOT_UPLOADED, whether or not something lies there."""
        path = os.path.abspath(path)
        with self._lock:
            self._taken = {key: taken for key, taken in self._taken.items() if taken.is_file()}  # expired ones go
            earlier = self._taken.get((session, path))
            if earlier is not None:
                _link_or_copy(earlier, target)
            elif path in self.waiting and Path(path).is_file():
                self.waiting.discard(path)
                shutil.move(path, target)
                _remove_empty_folders(Path(path).parent, self.root)
            else:
                raise messages.UserError(messages.NOT_UPLOADED, param="file")
            self._taken[session, path] = target
        return target

    def forget_waiting(self) -> None:
        """Delete what was uploaded but never transcribed (at shutdown)."""
        with self._lock:
            for path in self.waiting:
                Path(path).unlink(missing_ok=True)
                _remove_empty_folders(Path(path).parent, self.root)
            self.waiting.clear()


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` as a second name of `source` where the file system allows (no copy), else a copy: each job
    has its own input, which deleting the other job's folder leaves alone."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _remove_empty_folders(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to `root` (not included) while they are empty."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone already
            return
        folder = folder.parent
