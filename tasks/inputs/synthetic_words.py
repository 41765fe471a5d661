"""The word lists the embedded data set is drawn from: genre vocabularies, title shapes, names,
shelves and shop fields. Data, kept apart from the generator's code (tasks/inputs/synthetic.py)."""

from __future__ import annotations

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
SECOND_CATEGORY: dict[str, str] = {
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
VOCAB: dict[str, tuple[str, ...]] = {
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
RELATED: dict[str, tuple[str, ...]] = {
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

FILLERS: tuple[str, ...] = (
    "Secrets", "Lessons", "The Art", "Essentials", "A Journey", "The Story", "Simple Steps",
    "The Ultimate Book", "A New Way", "The Little Book", "Everything You Need to Know",
    "The Power", "Foundations", "Notes", "Adventures",
)
GENERIC: tuple[str, ...] = (
    "Life", "Time", "Light", "Home", "the World", "Everything", "the Road", "Tomorrow",
    "the River", "Small Things", "the Way", "Beginnings", "Truth", "the Season", "Change",
)
# Shared across genres on purpose: they add noise words, not signal.
TEMPLATES: tuple[str, ...] = (
    "{k}", "{k} and {k2}", "The {k} Book", "{f} of {k}", "{k}: {f}", "{k}: {f} of {k2}",
    "The Complete Guide to {k}", "{k} for Beginners", "{k}, {ed} Edition",
    "{k} ({k2} Series, Book {n})", "{f}: {k} and {k2}", "{k} {k2}", "{k} (Book {n})",
)
GENERIC_TEMPLATES: tuple[str, ...] = (
    "{f} of {g}", "{g}", "{g}: {f}", "The Book of {g}", "{f} of {g} (Book {n})",
)
EDITIONS: tuple[str, ...] = ("2nd", "3rd", "4th", "5th", "10th")

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Susan", "Richard", "Karen", "Thomas", "Nancy", "Daniel", "Lisa",
    "Matthew", "Sarah", "Anthony", "Emily", "Mark", "Laura", "Paul", "Anna", "Steven",
    "Rachel", "Andrew", "Julia", "Peter", "Helen", "Kevin", "Grace", "Brian", "Hannah",
)
# Accented names exercise the latin-1 encoding; kept rarer than plain ones, as in the data.
FIRST_NAMES_ACCENTED: tuple[str, ...] = (
    "José", "Zoë", "Renée", "Björn", "François", "Inés", "Søren", "Chloé", "André",
    "Mónica", "Jürgen", "Noël",
)
LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Moore",
    "Taylor", "Anderson", "Thomas", "Jackson", "White", "Harris", "Martin", "Thompson",
    "Clark", "Lewis", "Walker", "Hall", "Allen", "Young", "King", "Wright", "Scott", "Green",
    "Baker", "Adams", "Nelson", "Carter", "Mitchell", "Roberts", "Turner", "Phillips",
    "Campbell", "Evans", "Collins",
)
LAST_NAMES_ACCENTED: tuple[str, ...] = (
    "Müller", "Peña", "Núñez", "García", "Böhm", "Lefèvre",
    "Gómez", "Østergaard", "Brontë", "Ångström",
)
FORMATS: tuple[str, ...] = ("Paperback", "Hardback", "Mixed media product", "Board book", "Cards")
FORMAT_WEIGHTS: tuple[float, ...] = (0.74, 0.21, 0.02, 0.02, 0.01)
