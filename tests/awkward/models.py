"""Test-only models (app label ``awkward``; installed by ``tests/settings.py`` only, created
without migrations). Each one is a shape of real sites that the content models lack."""

from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models

# ruff: noqa: DJ008 - test models, never shown


class Note(models.Model):
    """A generic relation outside the sync key: a note on any record (like comments or the
    admin's log entries), its ``object_id`` an integer id."""

    xmlid = models.CharField(max_length=100, unique=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.PositiveBigIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    text = models.TextField(blank=True)


class Label(models.Model):
    """A generic relation inside the sync key (content type + object + name), its
    ``object_id`` a text (as in django-taggit and object-permission tables)."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.CharField(max_length=64)
    target = GenericForeignKey("content_type", "object_id")
    name = models.CharField(max_length=50)

    class Meta:
        unique_together = [("content_type", "object_id", "name")]


class Seat(models.Model):
    """Unique values besides the sync key (``code``): an import may move them between rows."""

    code = models.CharField(max_length=20, unique=True)
    number = models.IntegerField(unique=True)
    nickname = models.CharField(max_length=50, unique=True, null=True, blank=True)


class Form(models.Model):
    """Fields an archive may lack: one required without a default, one with a default, one
    nullable."""

    name = models.CharField(max_length=50, unique=True)
    required_text = models.CharField(max_length=20)
    with_default = models.IntegerField(default=7)
    optional = models.CharField(max_length=20, null=True, blank=True)  # noqa: DJ001


class VisibleManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(hidden=False)


class Article(models.Model):
    """A default manager that hides rows: export and matching must still see every row."""

    slug = models.SlugField(unique=True)
    hidden = models.BooleanField(default=False)
    title = models.CharField(max_length=100, blank=True)
    # Deleting an article deletes its notes (a Collector follows a GenericRelation).
    notes = GenericRelation(Note)

    objects = VisibleManager()


class Specimen(models.Model):
    """One field of each kind of value, for the property-based round trip between databases
    (tests/test_roundtrip_property.py). Every value field is nullable, so a row may hold none."""

    code = models.CharField(max_length=20, unique=True)
    short_text = models.CharField(max_length=30, null=True, blank=True)  # noqa: DJ001
    long_text = models.TextField(null=True, blank=True)  # noqa: DJ001
    data = models.JSONField(null=True, blank=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    fraction = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    wide = models.DecimalField(max_digits=15, decimal_places=4, null=True, blank=True)
    huge = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    moment = models.DateTimeField(null=True, blank=True)
    day = models.DateField(null=True, blank=True)
    clock = models.TimeField(null=True, blank=True)
    span = models.DurationField(null=True, blank=True)
    uuid = models.UUIDField(null=True, blank=True)
    small = models.SmallIntegerField(null=True, blank=True)
    integer = models.IntegerField(null=True, blank=True)
    big = models.BigIntegerField(null=True, blank=True)
    positive_small = models.PositiveSmallIntegerField(null=True, blank=True)
    positive = models.PositiveIntegerField(null=True, blank=True)
    positive_big = models.PositiveBigIntegerField(null=True, blank=True)
    flag = models.BooleanField(null=True, blank=True)
    ratio = models.FloatField(null=True, blank=True)
    blob = models.BinaryField(null=True, blank=True)


class Node(models.Model):
    """Links into its own table that load with the row (an M2M to itself is not deferred):
    a row may refer to another row of the same table."""

    name = models.CharField(max_length=50, unique=True)
    links = models.ManyToManyField("self", symmetrical=False, blank=True)
