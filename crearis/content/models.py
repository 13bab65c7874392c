"""The Crearis platform's content: the data that Crearis Sync moves between databases.

The models keep the awkward parts of the real platform on purpose: natural keys instead of ids
(Status, Tag, SystemConfig, User, Project), text ``xmlid`` identities, JSON columns, a
database-generated column, a self reference, an M2M through a model of its own, and the cycle
User → Instructor → Image → Project → User.
"""

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models import Case, Value, When


class Timestamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class XmlidModel(Timestamped):
    """An entity identified across databases by ``{domaincode}.{entity}__{slug}``."""

    xmlid = models.CharField(max_length=200, unique=True)
    status = models.ForeignKey("Status", on_delete=models.PROTECT, related_name="+")

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.xmlid


class Status(Timestamped):
    value = models.SmallIntegerField()
    name = models.CharField(max_length=50)
    table = models.CharField(max_length=50, help_text="The entity this status applies to.")
    description = models.TextField(blank=True)
    name_i18n = models.JSONField(default=dict, blank=True)
    desc_i18n = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "statuses"
        ordering = ["table", "value"]
        constraints = [
            models.UniqueConstraint(fields=["name", "table"], name="status_name_table_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.table}: {self.name} ({self.value})"


class Tag(Timestamped):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    name_i18n = models.JSONField(default=dict, blank=True)
    desc_i18n = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SystemConfig(Timestamped):
    key = models.CharField(max_length=100, unique=True)
    value = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)

    class Meta:
        verbose_name = "system config"
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, sysmail: str, password: str | None = None, **extra):
        user = self.model(sysmail=self.normalize_email(sysmail), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, sysmail: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("role", User.Role.ADMIN)
        return self.create_user(sysmail, password, **extra)


class User(AbstractBaseUser, PermissionsMixin, Timestamped):
    class Role(models.TextChoices):
        ADMIN = "admin"
        BASE = "base"
        OWNER = "owner"
        MEMBER = "member"

    sysmail = models.EmailField("system e-mail", unique=True)
    extmail = models.EmailField("external e-mail", blank=True)
    username = models.CharField(max_length=150, blank=True)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.BASE)
    instructor = models.ForeignKey(
        "Instructor", null=True, blank=True, on_delete=models.SET_NULL, related_name="users"
    )
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)

    objects = UserManager()

    USERNAME_FIELD = "sysmail"
    EMAIL_FIELD = "sysmail"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["sysmail"]

    def __str__(self) -> str:
        return self.sysmail


class Project(Timestamped):
    class Type(models.TextChoices):
        PROJECT = "project"
        REGIO = "regio"
        SPECIAL = "special"
        TOPIC = "topic"

    domaincode = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="projects")
    regio = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="subprojects"
    )
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.PROJECT)
    is_regio = models.GeneratedField(
        expression=Case(When(type="regio", then=Value(True)), default=Value(False)),
        output_field=models.BooleanField(),
        db_persist=True,
    )
    status = models.ForeignKey(Status, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["domaincode"]

    def __str__(self) -> str:
        return self.domaincode


class Image(XmlidModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    owner = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="images"
    )
    name = models.CharField(max_length=200)
    url = models.URLField(max_length=500)
    alt = models.CharField(max_length=300, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)


class Instructor(XmlidModel):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="instructors"
    )
    is_public = models.BooleanField(default=True)


class Location(XmlidModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="locations")
    name = models.CharField(max_length=200)
    street = models.CharField(max_length=200, blank=True)
    zip = models.CharField(max_length=20, blank=True)
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, blank=True)
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)


class Event(XmlidModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="events")
    location = models.ForeignKey(
        Location, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    public_instructor = models.ForeignKey(
        Instructor, null=True, blank=True, on_delete=models.SET_NULL, related_name="public_events"
    )
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    name = models.CharField(max_length=200)
    teaser = models.TextField(blank=True)
    description = models.TextField(blank=True)
    date_begin = models.DateTimeField(null=True, blank=True)
    date_end = models.DateTimeField(null=True, blank=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    capacity = models.PositiveIntegerField(null=True, blank=True)
    is_online = models.BooleanField(default=False)
    tags = models.ManyToManyField(Tag, blank=True, related_name="events")
    instructors = models.ManyToManyField(
        Instructor, through="EventInstructor", blank=True, related_name="events"
    )


class EventInstructor(Timestamped):
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="event_instructors")
    instructor = models.ForeignKey(
        Instructor, on_delete=models.CASCADE, related_name="event_instructors"
    )
    added_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "instructor"], name="eventinstructor_event_instructor_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} ↔ {self.instructor_id}"


class Post(XmlidModel):
    event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="posts"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="posts")
    name = models.CharField(max_length=200)
    teaser = models.TextField(blank=True)
    content = models.TextField(blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="posts")


class Participant(XmlidModel):
    class Type(models.TextChoices):
        CHILD = "child"
        TEEN = "teen"
        ADULT = "adult"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="participants")
    name = models.CharField(max_length=200)
    age = models.PositiveSmallIntegerField(null=True, blank=True)
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, blank=True)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.ADULT)
    meta = models.JSONField(default=dict, blank=True)
