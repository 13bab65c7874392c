"""A realistic, deterministic demo data set: the same seed always gives the same rows."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import models, transaction

from crearis.content.models import (
    Event,
    EventInstructor,
    Image,
    Instructor,
    Location,
    Participant,
    Post,
    Project,
    Status,
    Tag,
    User,
)

CONTENT_MODELS = [User, Project, Image, Instructor, Location, Event, EventInstructor, Post,
                  Participant]  # fmt: skip
BATCH = 2000
EPOCH = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)

FIRST_NAMES = ["Jürgen", "Zoë", "Anežka", "François", "Søren", "Łukasz", "Ümit", "Ilse", "Jiří",
               "Mårten", "Chloé", "Ægir", "Renée", "Bořek", "Małgorzata", "Noël", "Dörte", "José",
               "Žofie", "Björn", "Ana", "Hans", "Eva", "Tomáš"]  # fmt: skip
LAST_NAMES = ["Müller", "Dvořák", "Šťastný", "Weiß", "Ångström", "Kovács", "Nováková", "Groß",
              "O'Brien", "Černý", "Schröder", "Hélène", "Østergaard", "Lindqvist", "Jäger",
              "Procházka", "Köhler", "Zelenková"]  # fmt: skip
CITIES = [("Dresden", "DE"), ("Görlitz", "DE"), ("München", "DE"), ("Köln", "DE"),
          ("Praha", "CZ"), ("Brno", "CZ"), ("Ústí nad Labem", "CZ"), ("České Budějovice", "CZ"),
          ("Wien", "AT"), ("Zürich", "CH"), ("Kraków", "PL"), ("Wrocław", "PL")]  # fmt: skip
WORDS = ["Theater", "Werkstatt", "Tanz", "Musik", "Malerei", "Sommer", "Zirkus", "Bühne",
         "dílna", "divadlo", "léto", "hudba", "Spiel", "Maske", "Licht", "Schatten", "Stimme",
         "Fest", "Kunst", "Märchen", "příběh", "Straße", "🎭", "🎶", "Begegnung",
         "Øvelse"]  # fmt: skip


@dataclass
class DemoSize:
    events: int

    @property
    def projects(self) -> int:
        return max(4, self.events // 40)

    @property
    def regions(self) -> int:
        return max(1, self.projects // 8)

    @property
    def users(self) -> int:
        return self.projects * 2 + 2

    @property
    def instructors(self) -> int:
        return max(4, self.events // 15)

    @property
    def locations(self) -> int:
        return max(3, self.events // 8)

    @property
    def images(self) -> int:
        return self.instructors + self.events // 2

    @property
    def posts(self) -> int:
        return self.events // 2

    @property
    def participants(self) -> int:
        return self.events * 4


class DemoRefused(Exception):
    pass


@contextmanager
def fixed_timestamps() -> Iterator[None]:
    """Turn off auto_now/auto_now_add while the demo writes, so timestamps are reproducible."""
    saved = []
    for model in CONTENT_MODELS:
        for f in model._meta.concrete_fields:
            if isinstance(f, models.DateTimeField) and (f.auto_now or f.auto_now_add):
                saved.append((f, f.auto_now, f.auto_now_add))
                f.auto_now = f.auto_now_add = False
    try:
        yield
    finally:
        for f, auto_now, auto_now_add in saved:
            f.auto_now, f.auto_now_add = auto_now, auto_now_add


def content_exists(using: str = "default") -> bool:
    """Whether the database holds content (staff accounts, e.g. from createsuperuser, aside)."""
    users = User.objects.using(using).filter(is_staff=False)
    return users.exists() or any(
        m._default_manager.using(using).exists() for m in CONTENT_MODELS if m is not User
    )


class DemoBuilder:
    def __init__(self, size: DemoSize, seed: int, using: str, progress: Callable[[int], None]):
        self.size = size
        self.rng = random.Random(seed)
        self.using = using
        self.progress = progress
        self.statuses = {
            (s.table, s.name): s.pk for s in Status.objects.using(using).only("table", "name")
        }
        if not self.statuses:
            raise DemoRefused("No statuses found: run `python manage.py syncseed` first.")
        self.tags = list(Tag.objects.using(using).order_by("name").values_list("pk", flat=True))

    # -- small helpers -----------------------------------------------------------------------
    def status(self, table: str) -> int:
        name = self.rng.choice(["new", "demo", "progress", "done", "done", "done"])
        return self.statuses[(table, name)]

    def person(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)}"

    def words(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n))

    def stamp(self, index: int) -> dict:
        created = EPOCH + timedelta(minutes=index * 7, microseconds=self.rng.randrange(10**6))
        updated = created + timedelta(days=self.rng.randrange(0, 90), seconds=index % 3600)
        return {"created_at": created, "updated_at": updated}

    def insert(self, model: type[models.Model], objs: list[models.Model]) -> list[int]:
        pks: list[int] = []
        for start in range(0, len(objs), BATCH):
            batch = objs[start : start + BATCH]
            model._default_manager.using(self.using).bulk_create(batch)
            pks += [o.pk for o in batch]
            self.progress(len(batch))
        return pks

    def chunked(self, total: int, make: Callable[[int], models.Model], model) -> list[int]:
        """Build and insert ``total`` rows in batches, keeping memory flat."""
        pks: list[int] = []
        for start in range(0, total, BATCH):
            pks += self.insert(model, [make(i) for i in range(start, min(total, start + BATCH))])
        return pks

    # -- the data set --------------------------------------------------------------------------
    def build(self) -> dict[str, int]:
        s = self.size
        users = self.insert(User, [self.user(i) for i in range(s.users)])
        projects = self.projects(users)
        images = self.chunked(s.images, lambda i: self.image(i, projects, users), Image)
        instructors = self.chunked(
            s.instructors, lambda i: self.instructor(i, images[: s.instructors]), Instructor
        )
        # Close the cycle User → Instructor → Image → Project → User.
        for i, user_pk in enumerate(users[: len(instructors)]):
            if i % 3 == 0:
                User.objects.using(self.using).filter(pk=user_pk).update(instructor=instructors[i])
        locations = self.chunked(s.locations, lambda i: self.location(i, projects), Location)
        events = self.events(projects, locations, instructors, images[s.instructors :])
        self.chunked(s.posts, lambda i: self.post(i, projects, events), Post)
        self.chunked(s.participants, lambda i: self.participant(i, events), Participant)
        return {m._meta.label: m._default_manager.using(self.using).count() for m in CONTENT_MODELS}

    def user(self, i: int) -> User:
        name = self.person()
        return User(
            sysmail=f"user{i:06d}@crearis.example",
            username=name,
            extmail=f"{name.split()[0].lower()}.{i}@example.org",
            role=self.rng.choice(["base", "owner", "member"]) if i else "admin",
            password="!",  # unusable: demo users cannot log in
            **self.stamp(i),
        )

    def projects(self, users: list[int]) -> list[tuple[int, str]]:
        s = self.size
        regions = [
            Project(
                domaincode=f"regio{r}",
                name=f"Region {self.rng.choice(CITIES)[0]} {r}",
                type="regio",
                owner_id=users[r % len(users)],
                status_id=self.status("projects"),
                description=self.words(12),
                **self.stamp(r),
            )
            for r in range(s.regions)
        ]
        region_pks = self.insert(Project, regions)
        rest = [
            Project(
                domaincode=f"proj{p:05d}",
                name=f"{self.words(2)} {p}",
                type=self.rng.choice(["project", "project", "topic", "special"]),
                regio_id=self.rng.choice(region_pks),
                owner_id=users[(p * 2 + 1) % len(users)],
                status_id=self.status("projects"),
                description=self.words(20),
                **self.stamp(p),
            )
            for p in range(s.projects - s.regions)
        ]
        rest_pks = self.insert(Project, rest)
        return list(zip(region_pks + rest_pks, [p.domaincode for p in regions + rest], strict=True))

    def image(self, i: int, projects, users) -> Image:
        project_pk, code = projects[i % len(projects)]
        return Image(
            xmlid=f"{code}.image__img_{i}",
            project_id=project_pk,
            owner_id=self.rng.choice(users),
            name=self.words(3),
            url=f"https://images.crearis.example/{code}/{i}.jpg",
            alt=self.words(4),
            width=self.rng.choice([640, 800, 1024, 1920]),
            height=self.rng.choice([480, 600, 768, 1080]),
            status_id=self.status("images"),
            **self.stamp(i),
        )

    def instructor(self, i: int, images: list[int]) -> Instructor:
        return Instructor(
            xmlid=f"crearis.instructor__i{i}",
            name=self.person(),
            description=self.words(25),
            image_id=images[i] if i % 4 else None,
            is_public=i % 5 != 0,
            status_id=self.status("instructors"),
            **self.stamp(i),
        )

    def location(self, i: int, projects) -> Location:
        project_pk, code = projects[i % len(projects)]
        city, country = self.rng.choice(CITIES)
        return Location(
            xmlid=f"{code}.location__loc_{i}",
            project_id=project_pk,
            name=f"{self.rng.choice(WORDS)}haus {city}",
            street=f"{self.rng.choice(LAST_NAMES)}straße {self.rng.randint(1, 120)}",
            zip=f"{self.rng.randint(1000, 99999):05d}",
            city=city,
            country=country,
            latitude=Decimal(f"{self.rng.uniform(47, 55):.6f}"),
            longitude=Decimal(f"{self.rng.uniform(6, 19):.6f}"),
            status_id=self.status("locations"),
            **self.stamp(i),
        )

    def events(self, projects, locations, instructors, images) -> list[tuple[int, str]]:
        events: list[tuple[int, str]] = []
        through_tags = Event.tags.through
        for start in range(0, self.size.events, BATCH):
            batch = [self.event(i, projects, locations, instructors, images)
                     for i in range(start, min(self.size.events, start + BATCH))]  # fmt: skip
            pks = self.insert(Event, batch)
            events += [(pk, e.xmlid) for pk, e in zip(pks, batch, strict=True)]
            links, tags = [], []
            for pk, event in zip(pks, batch, strict=True):
                for instructor in self.rng.sample(instructors, k=min(2, len(instructors))):
                    links.append(EventInstructor(
                        event_id=pk, instructor_id=instructor,
                        added_at=event.created_at + timedelta(hours=1),
                        created_at=event.created_at, updated_at=event.updated_at,
                    ))  # fmt: skip
                for tag in self.rng.sample(
                    self.tags, k=self.rng.randint(0, min(3, len(self.tags)))
                ):
                    tags.append(through_tags(event_id=pk, tag_id=tag))
            self.insert(EventInstructor, links)
            through_tags.objects.using(self.using).bulk_create(tags, batch_size=BATCH)
        return events

    def event(self, i: int, projects, locations, instructors, images) -> Event:
        project_pk, code = projects[i % len(projects)]
        begin = EPOCH + timedelta(days=i % 700, hours=self.rng.randint(8, 19))
        return Event(
            xmlid=f"{code}.event__ev_{i}",
            project_id=project_pk,
            location_id=self.rng.choice(locations) if i % 6 else None,
            public_instructor_id=self.rng.choice(instructors),
            image_id=images[i % len(images)] if images and i % 3 else None,
            name=f"{self.words(3)} №{i}",
            teaser=self.words(15),
            description="\n\n".join(self.words(60) for _ in range(3)),
            date_begin=begin,
            date_end=begin + timedelta(hours=self.rng.randint(1, 72)),
            price=Decimal(self.rng.randint(0, 9000)) / 100 if i % 4 else None,
            capacity=self.rng.choice([None, 12, 20, 30, 100]),
            is_online=i % 9 == 0,
            status_id=self.statuses[("events", self.rng.choice(
                ["draft", "publish", "released", "confirmed", "running", "passed"]))],
            **self.stamp(i),
        )  # fmt: skip

    def post(self, i: int, projects, events) -> Post:
        event_pk, _ = events[i % len(events)] if events else (None, "")
        project_pk, code = projects[i % len(projects)]
        return Post(
            xmlid=f"{code}.post__p_{i}",
            project_id=project_pk,
            event_id=event_pk if i % 2 else None,
            name=f"Rückblick: {self.words(3)}",
            teaser=self.words(12),
            content="\n".join(self.words(40) for _ in range(4)),
            status_id=self.status("posts"),
            **self.stamp(i),
        )

    def participant(self, i: int, events) -> Participant:
        event_pk, event_xmlid = events[i % len(events)]
        age = self.rng.randint(5, 80)
        city, country = self.rng.choice(CITIES)
        kind = "child" if age < 13 else "teen" if age < 18 else "adult"
        return Participant(
            xmlid=f"{event_xmlid.split('.')[0]}.participant__pa_{i}",
            event_id=event_pk,
            name=self.person(),
            age=age,
            city=city,
            country=country,
            type=kind,
            meta={"diet": self.rng.choice(["", "vegetarisch", "vegan", "halal"]),
                  "newsletter": self.rng.random() < 0.3, "note": self.words(3)},
            status_id=self.status("participants"),
            **self.stamp(i),
        )  # fmt: skip


def build_demo(
    events: int,
    seed: int = 1,
    using: str = "default",
    force: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> dict[str, int]:
    """Fill the database with demo content; returns the row count per model."""
    if content_exists(using) and not force:
        raise DemoRefused(
            "The database already holds content; pass --force to replace it with demo data."
        )
    with transaction.atomic(using=using), fixed_timestamps():
        builder = DemoBuilder(DemoSize(events), seed, using, progress)
        delete_content(using)
        return builder.build()


def delete_content(using: str = "default") -> None:
    """Remove all content rows (system data and staff accounts stay), breaking the reference
    cycle first."""
    User.objects.using(using).update(instructor=None)
    Project.objects.using(using).update(regio=None)
    for model in reversed(CONTENT_MODELS):
        rows = model._default_manager.using(using).all()
        (rows.filter(is_staff=False) if model is User else rows).delete()


def demo_total(events: int) -> int:
    """Rows the demo writes for ``events`` (for a progress bar), through rows excluded."""
    s = DemoSize(events)
    return (s.users + s.projects + s.images + s.instructors + s.locations + s.events
            + s.events * 2 + s.posts + s.participants)  # fmt: skip
