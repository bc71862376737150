"""``dextr serve``: a local web server to annotate photos with four clicks per object, an HTTP
API, and a CVAT-compatible DEXTR interactor. Needs the ``serve`` extra (FastAPI, uvicorn).

    from dextr_lib.serving import create_app
    app = create_app(model, images_dir="photos", annotations="annotations.json")
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""
from .app import close_app, create_app

__all__ = ["close_app", "create_app"]
