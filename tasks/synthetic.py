"""The embedded default data set: what the pipeline trains on when the user brings no data.

A first run, a CI job or a demo must exercise every step (reading latin-1 listings,
mapping one taxonomy onto another, splitting covers by ISBN, fine-tuning on images)
without network access and without shipping anyone's copyrighted covers. So this module
writes files in the exact on-disk formats of the two real data sets, byte for byte
reproducible from a seed, with a signal that is learnable but deliberately imperfect:
a model that scores 100% here would hide bugs (label leaks, broken splits) instead of
revealing them, and a model that scores chance would prove nothing.
"""

from __future__ import annotations

import colorsys
import csv
import io
import logging
import math
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.settings import Settings

from tasks.taxonomy import (
    BOOKCOVER30_GENRES,
    BOOKDEPOSITORY_CATEGORIES,
    amazon_genre_id,
)

log = logging.getLogger(__name__)

LISTING_DIR = "amazon-books"
LISTING_FILE = "book32-listing.csv"
COVERS_DIR = "bookdepository-covers"
COVERS_FILE = "book-covers.csv"
COVERS_IMAGES = "book-covers"
COVER_COLUMNS: tuple[str, ...] = (
    "image", "name", "author", "format", "book_depository_stars", "price",
    "currency", "old_price", "isbn", "category", "img_paths",
)

# Each Amazon genre's most natural Book Depository shelf: the taxonomy mapping that
# labeling covers with the Amazon-trained classifier must reproduce.
GENRE_TO_COVER_CATEGORY: dict[str, str] = {
    "Arts & Photography": "Art-Photography",
    "Biographies & Memoirs": "Biography",
    "Business & Money": "Business-Finance-Law",
    "Calendars": "Stationery",
    "Children's Books": "Childrens-Books",
    "Comics & Graphic Novels": "Graphic-Novels-Anime-Manga",
    "Computers & Technology": "Computing",
    "Cookbooks, Food & Wine": "Food-Drink",
    "Crafts, Hobbies & Home": "Crafts-Hobbies",
    "Christian Books & Bibles": "Religion",
    "Engineering & Transportation": "Technology-Engineering",
    "Health, Fitness & Dieting": "Health",
    "History": "History-Archaeology",
    "Humor & Entertainment": "Humour",
    "Law": "Business-Finance-Law",
    "Literature & Fiction": "Poetry-Drama",
    "Medical Books": "Medical",
    "Mystery, Thriller & Suspense": "Crime-Thriller",
    "Parenting & Relationships": "Health",
    "Politics & Social Sciences": "Society-Social-Sciences",
    "Reference": "Reference",
    "Religion & Spirituality": "Mind-Body-Spirit",
    "Romance": "Romance",
    "Science & Math": "Science-Geography",
    "Science Fiction & Fantasy": "Science-Fiction-Fantasy-Horror",
    "Self-Help": "Personal-Development",
    "Sports & Outdoors": "Sport",
    "Teen & Young Adult": "Teen-Young-Adult",
    "Test Preparation": "Teaching-Resources-Education",
    "Travel": "Travel-Holiday-Guides",
}

# Where the same book plausibly sits a second time, so multi-category listings (and the
# ISBN-level split they force) look like the real shelf overlaps.
_SECOND_CATEGORY: dict[str, str] = {
    "Arts & Photography": "Crafts-Hobbies",
    "Biographies & Memoirs": "History-Archaeology",
    "Business & Money": "Personal-Development",
    "Calendars": "Art-Photography",
    "Children's Books": "Teaching-Resources-Education",
    "Comics & Graphic Novels": "Science-Fiction-Fantasy-Horror",
    "Computers & Technology": "Technology-Engineering",
    "Cookbooks, Food & Wine": "Health",
    "Crafts, Hobbies & Home": "Home-Garden",
    "Christian Books & Bibles": "Mind-Body-Spirit",
    "Engineering & Transportation": "Transport",
    "Health, Fitness & Dieting": "Food-Drink",
    "History": "Society-Social-Sciences",
    "Humor & Entertainment": "Entertainment",
    "Law": "Society-Social-Sciences",
    "Literature & Fiction": "Romance",
    "Medical Books": "Health",
    "Mystery, Thriller & Suspense": "Poetry-Drama",
    "Parenting & Relationships": "Personal-Development",
    "Politics & Social Sciences": "History-Archaeology",
    "Reference": "Dictionaries-Languages",
    "Religion & Spirituality": "Religion",
    "Romance": "Poetry-Drama",
    "Science & Math": "Natural-History",
    "Science Fiction & Fantasy": "Teen-Young-Adult",
    "Self-Help": "Mind-Body-Spirit",
    "Sports & Outdoors": "Travel-Holiday-Guides",
    "Teen & Young Adult": "Science-Fiction-Fantasy-Horror",
    "Test Preparation": "Reference",
    "Travel": "Natural-History",
}

# Genre-typical title words: the signal a title classifier is supposed to find.
_VOCAB: dict[str, tuple[str, ...]] = {
    "Arts & Photography": (
        "Photography", "Watercolor", "Painting", "Drawing", "Portraits", "Sketchbook",
        "Museum", "Masterpieces", "Oil Painting", "Landscape Photography", "Renaissance Art",
        "Impressionists", "Sculpture", "Design", "Color Theory", "Architecture", "Camera",
        "Gallery", "Canvas", "Typography"),
    "Biographies & Memoirs": (
        "Memoir", "My Life", "Autobiography", "Biography", "Childhood", "Remembering",
        "Diaries", "A Life", "Lincoln", "Churchill", "Einstein", "Recollections",
        "Confessions", "Growing Up", "A True Story", "Legacy", "Letters Home", "My Father",
        "Journals", "Life and Times"),
    "Business & Money": (
        "Investing", "Leadership", "Marketing", "Startup", "Wealth", "Management",
        "Entrepreneur", "Personal Finance", "Stock Market", "Negotiation", "Sales",
        "Economics", "Money", "Strategy", "Accounting", "Real Estate", "Retirement",
        "Profit", "Small Business", "Brand"),
    "Calendars": (
        "Calendar", "Wall Calendar", "Desk Calendar", "Day-to-Day Calendar", "2016", "2017",
        "Mini Calendar", "Engagement Calendar", "Page-A-Day", "Monthly Planner", "Kittens",
        "Puppies", "Lighthouses", "Weekly", "16-Month", "Yearly", "Box Calendar",
        "Square Wall", "Planner", "Dates"),
    "Children's Books": (
        "Bear", "Bunny", "Picture Book", "Goodnight", "ABC", "Counting", "Bedtime", "Puppy",
        "Dinosaur", "Princess", "Tractor", "Kitten", "Colors", "Moon", "Board Book",
        "Lift-the-Flap", "Curious", "Farm", "Little Owl", "Peekaboo"),
    "Comics & Graphic Novels": (
        "Batman", "Superman", "Vol. 1", "Manga", "Graphic Novel", "Avengers", "X-Men",
        "Spider-Man", "Omnibus", "Comics", "Issues", "Deluxe Edition", "Saga", "Hero",
        "Villains", "Justice League", "Anime", "Volume 2", "Collected", "Walking Dead"),
    "Computers & Technology": (
        "Python", "Java", "Programming", "JavaScript", "Linux", "Software", "Algorithms",
        "Data Science", "Networking", "Excel", "Windows 10", "Web Development",
        "Machine Learning", "Cybersecurity", "Database", "SQL", "Coding", "Computer",
        "iPhone", "Cloud Computing"),
    "Cookbooks, Food & Wine": (
        "Recipes", "Cookbook", "Kitchen", "Baking", "Bread", "Slow Cooker", "Vegan",
        "Grilling", "Wine", "Desserts", "Cooking", "Soups", "Pasta", "Chef", "Meals",
        "Café", "Cocktails", "Crème Brûlée", "Barbecue", "Cupcakes"),
    "Crafts, Hobbies & Home": (
        "Knitting", "Quilting", "Crochet", "Sewing", "Patterns", "Woodworking", "Gardening",
        "Home Decor", "Embroidery", "DIY", "Projects", "Scrapbooking", "Beading",
        "Organizing", "Origami", "Yarn", "Stitches", "Handmade", "Candles", "Homesteading"),
    "Christian Books & Bibles": (
        "Bible", "Jesus", "Holy Bible", "Devotional", "KJV", "NIV", "Scripture", "Gospel",
        "Prayer", "Christ", "Church", "Faith", "Grace", "Psalms", "God", "Study Bible",
        "Pastor", "Sermons", "Apostle", "Christian"),
    "Engineering & Transportation": (
        "Engineering", "Automotive", "Aircraft", "Railroad", "Trains", "Electrical",
        "Mechanical", "Circuits", "Repair Manual", "Engines", "Structural",
        "Civil Engineering", "Aviation", "Ships", "Motorcycles", "Welding", "Hydraulics",
        "Locomotives", "Chevrolet", "Pilot"),
    "Health, Fitness & Dieting": (
        "Diet", "Weight Loss", "Fitness", "Paleo", "Yoga", "Workout", "Nutrition", "Keto",
        "Detox", "Healthy", "Calories", "Running", "Strength Training", "Gluten-Free",
        "Belly Fat", "Metabolism", "Smoothies", "Whole30", "Exercise", "Wellness"),
    "History": (
        "History", "World War II", "Civil War", "Empire", "Ancient Rome", "Revolution",
        "Battle", "Medieval", "Vikings", "Pharaohs", "Colonial America", "Napoleon",
        "Cold War", "Dynasty", "Conquest", "Holocaust", "Crusades", "Century",
        "Founding Fathers", "Archaeology"),
    "Humor & Entertainment": (
        "Jokes", "Funny", "Humor", "Puzzles", "Crossword", "Sudoku", "Trivia", "Comedy",
        "Hilarious", "Laugh", "Movies", "Hollywood", "Television", "Games", "Parody",
        "Cartoons", "Word Search", "Stand-Up", "Celebrity", "Pop Culture"),
    "Law": (
        "Law", "Legal", "Constitution", "Court", "Criminal Law", "Contracts", "Torts",
        "Supreme Court", "Evidence", "Litigation", "Attorney", "Rights", "Statutes",
        "Justice", "Lawyer", "Legal Writing", "Bar Exam", "Jurisprudence", "Patent", "Trial"),
    "Literature & Fiction": (
        "A Novel", "Stories", "Poems", "Poetry", "Classics", "Short Stories", "Sisters",
        "Daughter", "Summer", "Wife", "Tales", "Sonnets", "Orchard", "Drama", "Shakespeare",
        "Literary", "Anthology", "Novella", "Heart", "Collected Poems"),
    "Medical Books": (
        "Anatomy", "Nursing", "Clinical", "Pharmacology", "Medicine", "Surgery", "Pathology",
        "Physiology", "Diagnosis", "Pediatrics", "Cardiology", "Radiology",
        "Emergency Medicine", "Patients", "Neurology", "Dental", "Psychiatry", "Oncology",
        "Medical", "Clinical Handbook"),
    "Mystery, Thriller & Suspense": (
        "Murder", "Detective", "Thriller", "Killer", "Mystery", "Dead", "Crime", "Suspense",
        "Spy", "Conspiracy", "Missing", "Secrets", "Night", "Girl", "Blood", "Witness",
        "Case", "Deadly", "Agent", "Alibi"),
    "Parenting & Relationships": (
        "Parenting", "Marriage", "Baby", "Toddler", "Love Languages", "Pregnancy", "Kids",
        "Mothers", "Fathers", "Family", "Relationships", "Dating", "Teenagers", "Raising",
        "Children", "Couples", "Divorce", "Breastfeeding", "Siblings", "Husband"),
    "Politics & Social Sciences": (
        "Politics", "Democracy", "Society", "Sociology", "Philosophy", "Inequality",
        "Election", "Government", "Psychology", "Policy", "America", "Capitalism", "Class",
        "Power", "Freedom", "Race", "Immigration", "Media", "Nation", "Liberty"),
    "Reference": (
        "Dictionary", "Thesaurus", "Encyclopedia", "Atlas", "Grammar", "Style Guide",
        "Handbook", "Spanish", "French", "Vocabulary", "Almanac", "Words", "English Usage",
        "Writing", "Phrasebook", "Etiquette", "Genealogy", "Chicago Manual", "Quotations",
        "Synonyms"),
    "Religion & Spirituality": (
        "Buddhism", "Meditation", "Spiritual", "Zen", "Soul", "Mindfulness", "Tarot",
        "Astrology", "Karma", "Islam", "Torah", "Hindu", "Enlightenment", "Angels", "Sacred",
        "Chakras", "Dalai Lama", "Mystic", "Wisdom", "Tao"),
    "Romance": (
        "Love", "Romance", "Billionaire", "Bride", "Kiss", "Cowboy", "Duke", "Wedding",
        "Passion", "Seduction", "Desire", "Lady", "Highlander", "Heartbreak", "Forever",
        "Temptation", "Rogue", "Christmas Wish", "Sweetheart", "Bachelor"),
    "Science & Math": (
        "Physics", "Calculus", "Algebra", "Chemistry", "Biology", "Quantum", "Universe",
        "Evolution", "Geometry", "Statistics", "Mathematics", "Genetics", "Cosmos",
        "Astronomy", "Theorem", "Equations", "Ecology", "Molecules", "Relativity", "Brain"),
    "Science Fiction & Fantasy": (
        "Dragon", "Wizard", "Magic", "Star Wars", "Galaxy", "Sword", "Throne", "Kingdom",
        "Starship", "Mage", "Robots", "Fantasy", "Dark Tower", "Realm", "Alien", "Prophecy",
        "Sorcerer", "Elves", "Time Travel", "Empire of Stars"),
    "Self-Help": (
        "Habits", "Happiness", "Success", "Mindset", "Confidence", "Motivation",
        "Productivity", "Self-Esteem", "Anxiety", "Change Your Life", "Goals",
        "Positive Thinking", "Power of Now", "Courage", "Stress", "Willpower",
        "Self-Discipline", "Gratitude", "Purpose", "Unstoppable"),
    "Sports & Outdoors": (
        "Baseball", "Football", "Golf", "Fishing", "Hiking", "Basketball", "Soccer",
        "Hunting", "Climbing", "Camping", "Cycling", "Marathon", "Coach", "Season", "Tennis",
        "Boxing", "Olympics", "Trail", "Champions", "Kayaking"),
    "Teen & Young Adult": (
        "Teen", "High School", "Academy", "Vampire", "Divergent", "Shadow", "Chosen",
        "Crush", "Rebel", "Prom", "Boyfriend", "Wings", "Rising", "Selection", "Maze",
        "Trials", "Outsiders", "Young Adult", "Sixteen", "Hunger"),
    "Test Preparation": (
        "GRE", "SAT", "GMAT", "Practice Tests", "ACT", "LSAT", "MCAT", "Exam", "Test Prep",
        "TOEFL", "Flashcards", "Study Guide", "Review", "Kaplan", "Princeton Review",
        "Praxis", "NCLEX", "Score", "Strategies", "ASVAB"),
    "Travel": (
        "Travel", "Guide", "Paris", "Lonely Planet", "Itinerary", "Rick Steves", "Italy",
        "Japan", "Fodor's", "Road Trip", "London", "National Parks", "Maps", "Hawaii",
        "Europe", "Walking Tours", "Backpacking", "Guidebook", "Destinations", "Mexico"),
}

# Genres a reader (or a model) could honestly confuse: the source of the hard noise.
_RELATED: dict[str, tuple[str, ...]] = {
    "Arts & Photography": ("Crafts, Hobbies & Home", "Comics & Graphic Novels", "Calendars"),
    "Biographies & Memoirs": ("History", "Literature & Fiction", "Politics & Social Sciences"),
    "Business & Money": ("Self-Help", "Law", "Politics & Social Sciences"),
    "Calendars": ("Arts & Photography", "Humor & Entertainment", "Travel"),
    "Children's Books": ("Teen & Young Adult", "Comics & Graphic Novels", "Humor & Entertainment"),
    "Comics & Graphic Novels": ("Science Fiction & Fantasy", "Humor & Entertainment", "Children's Books"),
    "Computers & Technology": ("Engineering & Transportation", "Science & Math", "Business & Money"),
    "Cookbooks, Food & Wine": ("Health, Fitness & Dieting", "Crafts, Hobbies & Home", "Travel"),
    "Crafts, Hobbies & Home": ("Arts & Photography", "Cookbooks, Food & Wine", "Parenting & Relationships"),
    "Christian Books & Bibles": ("Religion & Spirituality", "Self-Help", "Parenting & Relationships"),
    "Engineering & Transportation": ("Computers & Technology", "Science & Math", "History"),
    "Health, Fitness & Dieting": ("Cookbooks, Food & Wine", "Self-Help", "Medical Books"),
    "History": ("Biographies & Memoirs", "Politics & Social Sciences", "Religion & Spirituality"),
    "Humor & Entertainment": ("Comics & Graphic Novels", "Calendars", "Biographies & Memoirs"),
    "Law": ("Politics & Social Sciences", "Business & Money", "Test Preparation"),
    "Literature & Fiction": ("Mystery, Thriller & Suspense", "Romance", "Science Fiction & Fantasy"),
    "Medical Books": ("Health, Fitness & Dieting", "Science & Math", "Test Preparation"),
    "Mystery, Thriller & Suspense": ("Literature & Fiction", "Science Fiction & Fantasy", "Teen & Young Adult"),
    "Parenting & Relationships": ("Self-Help", "Health, Fitness & Dieting", "Children's Books"),
    "Politics & Social Sciences": ("History", "Law", "Business & Money"),
    "Reference": ("Test Preparation", "Literature & Fiction", "Travel"),
    "Religion & Spirituality": ("Christian Books & Bibles", "Self-Help", "History"),
    "Romance": ("Literature & Fiction", "Teen & Young Adult", "Mystery, Thriller & Suspense"),
    "Science & Math": ("Computers & Technology", "Medical Books", "Engineering & Transportation"),
    "Science Fiction & Fantasy": ("Teen & Young Adult", "Comics & Graphic Novels", "Literature & Fiction"),
    "Self-Help": ("Religion & Spirituality", "Business & Money", "Parenting & Relationships"),
    "Sports & Outdoors": ("Travel", "Health, Fitness & Dieting", "Biographies & Memoirs"),
    "Teen & Young Adult": ("Science Fiction & Fantasy", "Romance", "Children's Books"),
    "Test Preparation": ("Reference", "Science & Math", "Medical Books"),
    "Travel": ("Sports & Outdoors", "History", "Cookbooks, Food & Wine"),
}

_FILLERS: tuple[str, ...] = (
    "Secrets", "Lessons", "The Art", "Essentials", "A Journey", "The Story", "Simple Steps",
    "The Ultimate Book", "A New Way", "The Little Book", "Everything You Need to Know",
    "The Power", "Foundations", "Notes", "Adventures",
)
_GENERIC: tuple[str, ...] = (
    "Life", "Time", "Light", "Home", "the World", "Everything", "the Road", "Tomorrow",
    "the River", "Small Things", "the Way", "Beginnings", "Truth", "the Season", "Change",
)
# Shared across genres on purpose: they add noise words, not signal.
_TEMPLATES: tuple[str, ...] = (
    "{k}", "{k} and {k2}", "The {k} Book", "{f} of {k}", "{k}: {f}", "{k}: {f} of {k2}",
    "The Complete Guide to {k}", "{k} for Beginners", "{k}, {ed} Edition",
    "{k} ({k2} Series, Book {n})", "{f}: {k} and {k2}", "{k} {k2}", "{k} (Book {n})",
)
_GENERIC_TEMPLATES: tuple[str, ...] = (
    "{f} of {g}", "{g}", "{g}: {f}", "The Book of {g}", "{f} of {g} (Book {n})",
)
_EDITIONS: tuple[str, ...] = ("2nd", "3rd", "4th", "5th", "10th")

_FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Susan", "Richard", "Karen", "Thomas", "Nancy", "Daniel", "Lisa",
    "Matthew", "Sarah", "Anthony", "Emily", "Mark", "Laura", "Paul", "Anna", "Steven",
    "Rachel", "Andrew", "Julia", "Peter", "Helen", "Kevin", "Grace", "Brian", "Hannah",
)
# Accented names exercise the latin-1 encoding; kept rarer than plain ones, as in the data.
_FIRST_NAMES_ACCENTED: tuple[str, ...] = (
    "José", "Zoë", "Renée", "Björn", "François", "Inés", "Søren", "Chloé", "André",
    "Mónica", "Jürgen", "Noël",
)
_LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Moore",
    "Taylor", "Anderson", "Thomas", "Jackson", "White", "Harris", "Martin", "Thompson",
    "Clark", "Lewis", "Walker", "Hall", "Allen", "Young", "King", "Wright", "Scott", "Green",
    "Baker", "Adams", "Nelson", "Carter", "Mitchell", "Roberts", "Turner", "Phillips",
    "Campbell", "Evans", "Collins",
)
_LAST_NAMES_ACCENTED: tuple[str, ...] = (
    "Müller", "Peña", "Núñez", "García", "Böhm", "Lefèvre",
    "Gómez", "Østergaard", "Brontë", "Ångström",
)
_FORMATS: tuple[str, ...] = ("Paperback", "Hardback", "Mixed media product", "Board book", "Cards")
_FORMAT_WEIGHTS: tuple[float, ...] = (0.74, 0.21, 0.02, 0.02, 0.01)
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

NOISE_RATE = 0.15  # share of titles whose words point elsewhere or nowhere
PROLIFIC_AUTHORS = 3  # per genre: a weak extra signal, as real shelves have
PROLIFIC_RATE = 0.3
SECOND_CATEGORY_RATE = 0.10
ACCENT_RATE = 0.08  # per name part
_MOTIF_COUNT = 10


@dataclass(frozen=True)
class GeneratedData:
    """Where the embedded default landed, so callers never rebuild paths by convention."""

    listing_csv: Path
    covers_csv: Path
    listing_rows: int
    cover_rows: int


@dataclass(frozen=True)
class _Book:
    genre: str
    title: str
    author: str


# ---------------------------------------------------------------- titles and authors


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def _fill_title(rng: np.random.Generator, vocab: tuple[str, ...]) -> str:
    """Two distinct keywords from one genre, so a title carries one or two signal words."""
    i, j = rng.choice(len(vocab), size=2, replace=False)
    return _pick(rng, _TEMPLATES).format(
        k=vocab[int(i)], k2=vocab[int(j)], f=_pick(rng, _FILLERS),
        ed=_pick(rng, _EDITIONS), n=int(rng.integers(1, 9)))


def _generic_title(rng: np.random.Generator) -> str:
    """A title with no genre word at all: the irreducible error real listings have."""
    return _pick(rng, _GENERIC_TEMPLATES).format(
        f=_pick(rng, _FILLERS), g=_pick(rng, _GENERIC), n=int(rng.integers(1, 9)))


def _make_title(rng: np.random.Generator, genre: str) -> str:
    """Mostly genre words; sometimes a related genre's words or none, so accuracy < 100%."""
    if rng.random() >= NOISE_RATE:
        return _fill_title(rng, _VOCAB[genre])
    if rng.random() < 0.5:
        return _fill_title(rng, _VOCAB[_pick(rng, _RELATED[genre])])
    return _generic_title(rng)


def _random_author(rng: np.random.Generator) -> str:
    first = _pick(rng, _FIRST_NAMES_ACCENTED if rng.random() < ACCENT_RATE else _FIRST_NAMES)
    last = _pick(rng, _LAST_NAMES_ACCENTED if rng.random() < ACCENT_RATE else _LAST_NAMES)
    return f"{first} {last}"


def _prolific_authors(rng: np.random.Generator,
                      genres: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """A few names per genre that recur, like series authors do on real shelves."""
    return {g: tuple(_random_author(rng) for _ in range(PROLIFIC_AUTHORS)) for g in genres}


def _make_book(rng: np.random.Generator, genre: str, prolific: dict[str, tuple[str, ...]]) -> _Book:
    author = _pick(rng, prolific[genre]) if rng.random() < PROLIFIC_RATE else _random_author(rng)
    return _Book(genre=genre, title=_make_title(rng, genre), author=author)


def _draw_genres(rng: np.random.Generator, genres: tuple[str, ...], n: int) -> list[str]:
    """Roughly balanced with realistic skew: a perfectly flat prior is a tell of fake data."""
    weights = rng.uniform(0.7, 1.3, size=len(genres))
    idx = rng.choice(len(genres), size=n, p=weights / weights.sum())
    return [genres[int(i)] for i in idx]


# ---------------------------------------------------------------- identifiers


def _isbn10_check(digits: str) -> str:
    total = sum((10 - i) * int(d) for i, d in enumerate(digits))
    check = (11 - total % 11) % 11
    return "X" if check == 10 else str(check)


def _ean13_check(digits: str) -> str:
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits))
    return str((10 - total % 10) % 10)


def _unique_codes(rng: np.random.Generator, n: int, make: Callable[[np.random.Generator], str]) -> list[str]:
    """Rejection-sample until unique: collisions are rare, so this stays O(n)."""
    seen: set[str] = set()
    codes: list[str] = []
    while len(codes) < n:
        code = make(rng)
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def _asin(rng: np.random.Generator) -> str:
    """Book ASINs are ISBN-10s, so the checksum (and its occasional X) is kept."""
    body = str(int(rng.integers(0, 2))) + "".join(map(str, rng.integers(0, 10, size=8)))
    return body + _isbn10_check(body)


def _isbn13(rng: np.random.Generator) -> str:
    body = "978" + str(int(rng.integers(0, 2))) + "".join(map(str, rng.integers(0, 10, size=8)))
    return body + _ean13_check(body)


def _image_url(rng: np.random.Generator) -> str:
    key = "".join(_ALNUM[int(i)] for i in rng.integers(0, len(_ALNUM), size=8))
    return f"http://ecx.images-amazon.com/images/I/{int(rng.integers(4, 7))}1{key}L.jpg"


# ---------------------------------------------------------------- listing


def _write_listing(path: Path, rng: np.random.Generator, n: int, genres: tuple[str, ...],
                   prolific: dict[str, tuple[str, ...]]) -> int:
    """latin-1, fully quoted, headerless and sorted by id: the quirks readers must survive."""
    labels = sorted(_draw_genres(rng, genres, n), key=amazon_genre_id)
    asins = _unique_codes(rng, n, _asin)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="latin-1", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for asin, genre in zip(asins, labels):
            book = _make_book(rng, genre, prolific)
            writer.writerow([asin, f"{asin}.jpg", _image_url(rng), book.title, book.author,
                             str(amazon_genre_id(genre)), genre])
    return n


# ---------------------------------------------------------------- cover images


def _palette(genre: str) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    """Golden-ratio hues keep 30 genres' colours apart without a hand-made table."""
    i = BOOKCOVER30_GENRES.index(genre)
    hue = (i * 0.6180339887) % 1.0
    sat = (0.55, 0.85, 0.35)[i % 3]
    val = (0.85, 0.5, 0.7)[(i // 3) % 3]

    def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return int(r * 255), int(g * 255), int(b * 255)

    return rgb(hue, sat, val), rgb(hue + 0.5, 0.8, 1.15 - val), rgb(hue + 0.25, 0.6, 0.95)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)
    return r, g, b


def _motif_stripes(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(12, 20))
    for k, y in enumerate(range(int(rng.integers(0, step)), h, step)):
        d.rectangle([0, y, w, y + step // 2 - 1], fill=cols[k % 2])


def _motif_diagonal(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(14, 22))
    width = int(rng.integers(3, 7))
    for x in range(-h + int(rng.integers(0, step)), w, step):
        d.line([x, h, x + h, 0], fill=cols[0], width=width)


def _motif_circles(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    for k in range(int(rng.integers(4, 8))):
        r = int(rng.integers(w // 10, w // 4))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.ellipse([x - r, y - r, x + r, y + r], fill=cols[k % 2])


def _motif_triangles(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    for k in range(int(rng.integers(3, 6))):
        s = int(rng.integers(w // 5, w // 2))
        x, y = int(rng.integers(0, w)), int(rng.integers(s, h + s // 2))
        d.polygon([(x - s // 2, y), (x + s // 2, y), (x, y - s)], fill=cols[k % 2])


def _motif_grid(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(10, 16))
    ox, oy = int(rng.integers(0, step)), int(rng.integers(0, step))
    for x in range(ox, w, step):
        d.line([x, 0, x, h], fill=cols[0], width=2)
    for y in range(oy, h, step):
        d.line([0, y, w, y], fill=cols[1], width=2)


def _motif_waves(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    amp, period = float(rng.uniform(3, 7)), float(rng.uniform(18, 30))
    phase = float(rng.uniform(0, 2 * math.pi))
    for k, y0 in enumerate(range(int(rng.integers(4, 12)), h, 14)):
        pts = [(x, y0 + amp * math.sin(2 * math.pi * x / period + phase)) for x in range(0, w + 4, 4)]
        d.line(pts, fill=cols[k % 2], width=3)


def _motif_stars(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    for k in range(int(rng.integers(4, 8))):
        r = float(rng.uniform(w / 12, w / 6))
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        pts = [(cx + (r if j % 2 == 0 else r / 2.5) * math.sin(j * math.pi / 5),
                cy - (r if j % 2 == 0 else r / 2.5) * math.cos(j * math.pi / 5)) for j in range(10)]
        d.polygon(pts, fill=cols[k % 2])


def _motif_dots(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(9, 14))
    r = int(rng.integers(2, 4))
    for y in range(int(rng.integers(0, step)), h, step):
        for x in range(int(rng.integers(0, step)), w, step):
            d.ellipse([x - r, y - r, x + r, y + r], fill=cols[0])


def _motif_rings(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))
    for k, r in enumerate(range(int(rng.integers(6, 12)), max(w, h), 10)):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=cols[k % 2], width=3)


def _motif_diamonds(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    s = int(rng.integers(10, 16))
    for k, y in enumerate(range(int(rng.integers(0, s)), h + s, 2 * s)):
        for x in range(int(rng.integers(0, s)) + (s if k % 2 else 0), w + s, 2 * s):
            d.polygon([(x, y - s), (x + s, y), (x, y + s), (x - s, y)], fill=cols[k % 2])


_UNFOLDABLE = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss"})
_MOTIFS = (
    _motif_stripes, _motif_diagonal, _motif_circles, _motif_triangles, _motif_grid,
    _motif_waves, _motif_stars, _motif_dots, _motif_rings, _motif_diamonds,
)


def _drawable(text: str) -> str:
    """PIL's built-in font has no accented glyphs; fold them rather than draw boxes."""
    folded = unicodedata.normalize("NFKD", text.translate(_UNFOLDABLE))
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def _wrap(text: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy wrap on measured width: the default font is proportional."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _draw_text(d: ImageDraw.ImageDraw, rng: np.random.Generator, book: _Book, size: tuple[int, int],
               band: tuple[int, int, int], ink: tuple[int, int, int]) -> None:
    """Text on a plain band, as real covers do, so a CLIP-like model can also read it."""
    w, h = size
    font = ImageFont.load_default()
    lines = _wrap(_drawable(book.title), font, w - 8)[:4]
    top = int(rng.integers(4, max(5, h // 3)))
    d.rectangle([0, top - 2, w, top + 12 * len(lines) + 2], fill=band)
    for k, line in enumerate(lines):
        d.text((4, top + 12 * k), line, fill=ink, font=font)
    d.rectangle([0, h - 16, w, h], fill=band)
    d.text((4, h - 14), _drawable(book.author), fill=ink, font=font)


def render_cover(book_genre: str, title: str, author: str, size: tuple[int, int],
                 rng: np.random.Generator) -> bytes:
    """Palette and motif are the genre signal; jitter and noise stop the model memorising pixels."""
    bg, accent, band = _palette(book_genre)
    img = Image.new("RGB", size, _jitter(rng, bg, 14))
    d = ImageDraw.Draw(img)
    cols = [_jitter(rng, accent, 20), _jitter(rng, band, 20)]
    _MOTIFS[BOOKCOVER30_GENRES.index(book_genre) % _MOTIF_COUNT](d, rng, size[0], size[1], cols)
    ink = (20, 20, 20) if sum(band) > 380 else (240, 240, 240)
    _draw_text(d, rng, _Book(book_genre, title, author), size, _jitter(rng, band, 10), ink)
    pixels = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, size=(size[1], size[0], 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ---------------------------------------------------------------- covers set


def _second_category(rng: np.random.Generator, genre: str) -> str:
    """Mostly the natural neighbour shelf, sometimes any other, as in the scraped set."""
    first = GENRE_TO_COVER_CATEGORY[genre]
    if rng.random() < 0.8:
        return _SECOND_CATEGORY[genre]
    others = tuple(c for c in BOOKDEPOSITORY_CATEGORIES if c != first)
    return _pick(rng, others)


def _shop_fields(rng: np.random.Generator, isbn: str) -> dict[str, str]:
    """Shop metadata nobody trains on but readers must parse, missing values included."""
    price = float(rng.uniform(4, 40))
    old = "" if rng.random() < 0.16 else f"{price * float(rng.uniform(1.1, 1.8)):.1f}"
    stars = 0.0 if rng.random() < 0.1 else float(rng.integers(6, 11)) / 2
    fmt = _FORMATS[int(rng.choice(len(_FORMATS), p=np.array(_FORMAT_WEIGHTS)))]
    return {
        "image": ("https://d1w7fb2mkkr3kw.cloudfront.net/assets/images/book/mid/"
                  f"{isbn[:4]}/{isbn[4:8]}/{isbn}.jpg"),
        "format": fmt, "book_depository_stars": f"{stars:.1f}", "price": f"{price:.2f}",
        "currency": "$", "old_price": old, "isbn": isbn,
    }


def _cover_entries(rng: np.random.Generator, n: int, genres: tuple[str, ...],
                   prolific: dict[str, tuple[str, ...]],
                   size: tuple[int, int]) -> list[tuple[str, dict[str, str], bytes]]:
    """One (category, row, jpeg) per listing; a book on two shelves reuses its jpeg bytes."""
    entries: list[tuple[str, dict[str, str], bytes]] = []
    isbns = _unique_codes(rng, n, _isbn13)
    for isbn, genre in zip(isbns, _draw_genres(rng, genres, n)):
        book = _make_book(rng, genre, prolific)
        row = {"name": book.title, "author": book.author, **_shop_fields(rng, isbn)}
        jpeg = render_cover(genre, book.title, book.author, size, rng)
        cats = [GENRE_TO_COVER_CATEGORY[genre]]
        if rng.random() < SECOND_CATEGORY_RATE:
            cats.append(_second_category(rng, genre))
        entries.extend((c, row, jpeg) for c in cats)
    return entries


def _write_covers(root: Path, rng: np.random.Generator, n: int, genres: tuple[str, ...],
                  prolific: dict[str, tuple[str, ...]], size: tuple[int, int]) -> int:
    """Numbered in shelf order with gaps, like the scrape, so no code relies on dense ids."""
    entries = sorted(_cover_entries(rng, n, genres, prolific, size),
                     key=lambda e: BOOKDEPOSITORY_CATEGORIES.index(e[0]))
    number = 0
    with (root / COVERS_FILE).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COVER_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for category, row, jpeg in entries:
            number += 1 + int(rng.random() < 0.1)
            name = f"{number:07d}.jpg"
            folder = root / COVERS_IMAGES / category
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(jpeg)
            writer.writerow({**row, "category": category, "img_paths": f"dataset/{category}/{name}"})
    return len(entries)


# ---------------------------------------------------------------- entry point


def generate_dataset(out_dir: Path, listing_rows: int = 3000, cover_books: int = 600, seed: int = 0,
                     genres: int = 30, cover_size: tuple[int, int] = (96, 144)) -> GeneratedData:
    """Write both data sets from scratch so a stale or half-written default never survives.

    Listing and covers draw from separate child generators, so changing one size leaves
    the other data set's bytes unchanged.
    """
    if not 1 <= genres <= len(BOOKCOVER30_GENRES):
        raise ValueError(f"genres must be in 1..{len(BOOKCOVER30_GENRES)}, got {genres}")
    if listing_rows < 0 or cover_books < 0:
        raise ValueError("listing_rows and cover_books must be non-negative")
    out_dir = Path(out_dir)
    chosen = BOOKCOVER30_GENRES[:genres]
    root_rng = np.random.default_rng(seed)
    author_rng, listing_rng, covers_rng = root_rng.spawn(3)
    prolific = _prolific_authors(author_rng, chosen)

    listing_csv = out_dir / LISTING_DIR / LISTING_FILE
    covers_root = out_dir / COVERS_DIR
    for folder in (listing_csv.parent, covers_root):
        shutil.rmtree(folder, ignore_errors=True)
    covers_root.mkdir(parents=True)

    n_listing = _write_listing(listing_csv, listing_rng, listing_rows, chosen, prolific)
    n_covers = _write_covers(covers_root, covers_rng, cover_books, chosen, prolific, tuple(cover_size))
    log.info("embedded default: %d listing rows, %d cover rows (%d books) in %s",
             n_listing, n_covers, cover_books, out_dir)
    return GeneratedData(listing_csv=listing_csv, covers_csv=covers_root / COVERS_FILE,
                         listing_rows=n_listing, cover_rows=n_covers)


__all__ = ["GENRE_TO_COVER_CATEGORY", "GeneratedData", "generate_dataset", "render_cover"]


@task(name="generate-embedded-data", cache_policy=NO_CACHE)
def generate_embedded_data(settings: Settings) -> dict[str, object]:
    """The embedded default as a pipeline step, sized by the `generate` section of params.yaml."""
    cfg = settings.generate
    data = generate_dataset(cfg.out_dir, cfg.listing_rows, cfg.cover_books, cfg.seed, cfg.genres)
    return {"listing_rows": data.listing_rows, "cover_rows": data.cover_rows, "out_dir": str(cfg.out_dir)}
