"""Value pools for the synthetic knowledge base (fixed lists, nothing fetched at run time).

Values never contain a full stop, so a sentence's value can be parsed back exactly.
"""
from __future__ import annotations

FIRST_NAMES_F = (
    "Anna Berta Clara Dora Edith Freya Greta Hanna Ines Jana Karin Lena Mara Nora Olga Petra Rosa "
    "Sara Tilda Ulla Vera Wanda Yara Zoe Alma Bianca Celia Daria Elena Fiona Gemma Helga Irena "
    "Judith Kira Lidia Maren Nadia Orla Paula Regina Selma Tamara Ursula Viola Xenia"
).split()
FIRST_NAMES_M = (
    "Aaron Bruno Carl Dario Emil Felix Gustav Hugo Ivan Jonas Karl Leon Marco Nils Oskar Pavel Rafael "
    "Stefan Tomas Viktor Walter Yusuf Anton Boris Cyril Dmitri Erik Fabian Georg Henrik Igor Jakob "
    "Kasimir Lorenz Milan Niko Otto Pieter Quentin Roland Samuel Theo Urban Vincent Werner"
).split()
LAST_NAMES = (
    "Abbot Ahlberg Albescu Amsel Arden Baptiste Barlow Becker Bellini Bergstrom Blom Brandt Caruso "
    "Castell Cerny Dahl Delacroix Dorsey Dvorak Eklund Engel Falk Ferrante Fischer Forsyth Galvani "
    "Garner Greco Hahn Halden Havel Holm Ibsen Ivers Jansen Jovanovic Kessler Kowalski Krause Lang "
    "Larsen Lindqvist Lorca Marchetti Mertens Moreau Novak Nyberg Okafor Olsen Ortega Pahl Petrov "
    "Quist Rainer Reyes Rossi Rutger Sandoval Schubert Sorensen Stahl Tamm Thorne Udall Varga Vogel "
    "Wagner Weiss Wolff Yilmaz Zamora Zeller Zorn Achterberg Bianchi Brennan Coelho Dufour Eriksen "
    "Faber Gallo Gruber Hartmann Hughes Iversen Jaeger Keller Koch Lambert Lund Maurer Meyer Moretti "
    "Nagy Neumann Olsson Pereira Quinn Richter Rinaldi Santos Schmidt Silva Strand Szabo Toth Vidal "
    "Voss Walsh Wirth Young Zimmer Aalto Bauer Costa Doyle Ekberg Fontaine Horvat Kaplan Lehmann"
).split()
CITIES = (
    "Aarhus Bergen Bilbao Bologna Bordeaux Bremen Brno Bruges Cadiz Cork Dresden Dublin Essen Faro "
    "Florence Galway Geneva Genoa Ghent Graz Hamburg Helsinki Innsbruck Kassel Kiel Krakow Leeds "
    "Leipzig Lille Linz Lisbon Lyon Madrid Malmo Marseille Milan Munich Nantes Naples Nice Odense "
    "Oslo Oporto Padua Palermo Parma Porto Prague Riga Rouen Salzburg Seville Split Stuttgart "
    "Tallinn Tampere Toledo Toulouse Trieste Turin Uppsala Utrecht Valencia Verona Vienna Vilnius "
    "Warsaw Zagreb Zurich"
).split()
FIELDS = (
    "physics", "chemistry", "astronomy", "geology", "botany", "zoology", "linguistics", "economics",
    "philosophy", "mathematics", "medicine", "architecture", "sociology", "archaeology", "genetics",
    "oceanography", "statistics", "anthropology", "musicology", "cartography", "metallurgy",
    "epidemiology", "ecology", "robotics", "cryptography", "psychology", "meteorology", "law",
)
COMPANY_WORDS = (
    "Northwind Helios Altair Borealis Cobalt Meridian Quasar Vantage Solace Ironclad Juniper Keystone "
    "Lumen Nimbus Orion Pinnacle Redwood Sterling Tundra Umbra Vertex Willow Zenith Aurora Beacon"
).split()
COMPANY_SUFFIXES = ("Labs", "Systems", "Instruments", "Dynamics", "Works", "Analytics", "Foundry", "Partners")
AWARD_WORDS = (
    "Kessler Amsel Lorca Galvani Havel Ibsen Thorne Varga Zeller Forsyth Castell Marchetti Engel Holm "
    "Novak Weiss Dahl Blom"
).split()
AWARD_KINDS = ("Prize", "Medal", "Award")
AWARD_SUBJECTS = ("Science", "Letters", "Innovation", "Research", "Discovery", "Teaching")
MONTHS = (
    "January February March April May June July August September October November December"
).split()
SCHOOL_SHAPES = ("University of {city}", "{city} Institute of Technology", "{city} College")


def school_names() -> list[str]:
    """Every school name the generator may pick (three shapes per city)."""
    return [shape.format(city=c) for c in CITIES for shape in SCHOOL_SHAPES]


def employer_names() -> list[str]:
    """Every company name the generator may pick."""
    return [f"{w} {s}" for w in COMPANY_WORDS for s in COMPANY_SUFFIXES]


def award_names() -> list[str]:
    """Every award name the generator may pick, e.g. ``Kessler Prize for Science``."""
    return [f"{w} {k} for {s}" for w in AWARD_WORDS for k in AWARD_KINDS for s in AWARD_SUBJECTS]
