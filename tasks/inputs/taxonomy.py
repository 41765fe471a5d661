"""The two genre vocabularies the product meets: Amazon's book32 listing and Book Depository's covers.

They are data the readers and validators check against, kept in one place so a category
spelled two ways is caught at validation rather than split into two classes by a model.
"""

from __future__ import annotations

# book32 CATEGORY_ID -> CATEGORY, as in uchidalab/book-dataset (ids 0..31).
AMAZON_GENRES: tuple[str, ...] = (
    "Arts & Photography",
    "Biographies & Memoirs",
    "Business & Money",
    "Calendars",
    "Children's Books",
    "Comics & Graphic Novels",
    "Computers & Technology",
    "Cookbooks, Food & Wine",
    "Crafts, Hobbies & Home",
    "Christian Books & Bibles",
    "Engineering & Transportation",
    "Health, Fitness & Dieting",
    "History",
    "Humor & Entertainment",
    "Law",
    "Literature & Fiction",
    "Medical Books",
    "Mystery, Thriller & Suspense",
    "Parenting & Relationships",
    "Politics & Social Sciences",
    "Reference",
    "Religion & Spirituality",
    "Romance",
    "Science & Math",
    "Science Fiction & Fantasy",
    "Self-Help",
    "Sports & Outdoors",
    "Teen & Young Adult",
    "Test Preparation",
    "Travel",
    "Gay & Lesbian",
    "Education & Teaching",
)

# The 30 genres of the BookCover30 benchmark: book32 without the last two.
BOOKCOVER30_GENRES: tuple[str, ...] = AMAZON_GENRES[:30]

# The 33 category folders of the Book Depository cover set.
BOOKDEPOSITORY_CATEGORIES: tuple[str, ...] = (
    "Art-Photography",
    "Biography",
    "Business-Finance-Law",
    "Childrens-Books",
    "Computing",
    "Crafts-Hobbies",
    "Crime-Thriller",
    "Dictionaries-Languages",
    "Entertainment",
    "Food-Drink",
    "Graphic-Novels-Anime-Manga",
    "Health",
    "History-Archaeology",
    "Home-Garden",
    "Humour",
    "Medical",
    "Mind-Body-Spirit",
    "Natural-History",
    "Personal-Development",
    "Poetry-Drama",
    "Reference",
    "Religion",
    "Romance",
    "Science-Fiction-Fantasy-Horror",
    "Science-Geography",
    "Society-Social-Sciences",
    "Sport",
    "Stationery",
    "Teaching-Resources-Education",
    "Technology-Engineering",
    "Teen-Young-Adult",
    "Transport",
    "Travel-Holiday-Guides",
)


def amazon_genre_id(genre: str) -> int:
    """book32's numeric CATEGORY_ID of a genre name (raises ValueError when unknown)."""
    return AMAZON_GENRES.index(genre)


def readable_category(category: str) -> str:
    """'Science-Fiction-Fantasy-Horror' -> 'Science Fiction Fantasy Horror', for prompts."""
    return category.replace("-", " ")
