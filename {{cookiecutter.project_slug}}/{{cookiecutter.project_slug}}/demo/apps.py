"""App configuration of the demo: one small task per pool, and the job kinds behind the jobs page."""

from django.apps import AppConfig

#: Images the thumbnails flow accepts.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
#: Largest image the thumbnails flow accepts, in bytes (the claim check's upload ceiling still applies).
MAX_IMAGE_BYTES = 20 * 1024**2
#: Largest image the thumbnails flow decodes, in pixels, unless settings.DEMO_MAX_IMAGE_PIXELS says otherwise:
#: a small PNG can decode to gigabytes (a 12,500 x 12,500 one of 481 KB took 1.9 GiB in an images child).
MAX_IMAGE_PIXELS = 25_000_000


class DemoConfig(AppConfig):
    """The demo app; deleting it (or baking with ``demo_flows=n``) leaves a working jobs API with no kinds."""

    name = "{{ cookiecutter.project_slug }}.demo"
    label = "demo"

    def ready(self) -> None:
        from {{ cookiecutter.project_slug }}.jobs import kinds

        from . import tasks

        kinds.register(
            kinds.JobKind(
                name="report",
                label="Customer report from a CSV",
                task=tasks.customer_report,
                content_types=("text/csv",),
                extensions=(".csv",),
                arguments=tasks.report_arguments,
            )
        )
        kinds.register(
            kinds.JobKind(
                name="thumbnails",
                label="Thumbnails of an image",
                task=tasks.thumbnails,
                content_types=IMAGE_TYPES,
                max_upload_bytes=MAX_IMAGE_BYTES,
            )
        )
