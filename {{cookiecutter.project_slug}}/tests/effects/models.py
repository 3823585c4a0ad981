"""One row per side effect; the unique key turns a duplicate effect into an error the test sees."""

from django.db import models


class Effect(models.Model):
    """A side effect a test task performed."""

    key = models.CharField(max_length=200, unique=True)
    task_id = models.CharField(max_length=200, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class Counter(models.Model):
    """A counter per name, for effects that may legitimately happen more than once."""

    name = models.CharField(max_length=200, unique=True)
    value = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
