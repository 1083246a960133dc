"""English plural forms of nouns, for a shipped "surface form -> singular" table instead of runtime language data.

CHAIR (Rohrbach et al., EMNLP 2018) singularises every word (`pattern.singularize`; WordNet's noun lemma is the
modern equivalent). Both need downloaded data or a heavy dependency, but the engine only ever needs the singular of words
that can name an object, so the inverse is enough: generate the plural forms of each vocabulary word (regular
rules plus the irregular nouns below) and look tokens up. Over-generating a form that is not English ("sheeps") is
harmless; a form that is another word's singular is resolved in favour of that word by `lemma_table`.
"""

from __future__ import annotations

from collections.abc import Iterable

# Irregular plurals; also applied as suffixes ("policeman" -> "policemen", "pocketknife" -> "pocketknives").
IRREGULAR: dict[str, tuple[str, ...]] = {
    "person": ("people", "persons"),
    "man": ("men",),
    "woman": ("women",),
    "child": ("children",),
    "mouse": ("mice",),
    "goose": ("geese",),
    "louse": ("lice",),
    "ox": ("oxen",),
    "foot": ("feet",),
    "tooth": ("teeth",),
    "knife": ("knives",),
    "wife": ("wives",),
    "life": ("lives",),
    "calf": ("calves",),
    "half": ("halves",),
    "thief": ("thieves",),
    "leaf": ("leaves",),
    "loaf": ("loaves",),
    "wolf": ("wolves",),
    "shelf": ("shelves",),
    "scarf": ("scarves",),
    "hoof": ("hooves",),
    "die": ("dice",),
    "cactus": ("cacti",),
    "fungus": ("fungi",),
    "octopus": ("octopi",),
    "radius": ("radii",),
    "bacterium": ("bacteria",),
    "brother": ("brethren",),
    "taxi": ("taxies",),
}

# Irregular nouns that also end compounds ("policeman", "grandchild", "pocketknife"); "die" must not hit "birdie".
_SUFFIXED: frozenset[str] = frozenset(
    {"man", "child", "person", "knife", "mouse", "goose", "foot", "tooth", "wife", "leaf"}
)

# Nouns whose plural is the same word: no extra form, and no "sheeps"-style form either.
INVARIANT: frozenset[str] = frozenset(
    {"sheep", "deer", "fish", "bison", "moose", "cattle", "aircraft", "scissors", "series", "species"}
)

_SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")
_VOWELS = set("aeiou")


def plural_forms(word: str) -> set[str]:
    """Plural forms of the (lower-case, singular) noun `word`; several when usage varies ("buses", "busses")."""
    if not word or not word.isalpha() or word in INVARIANT:
        return set()
    forms: set[str] = set()
    for singular, plurals in IRREGULAR.items():
        if word == singular or (singular in _SUFFIXED and word.endswith(singular)):
            stem = word[: len(word) - len(singular)]
            forms.update(stem + plural for plural in plurals)
    if word.endswith(_SIBILANT_ENDINGS):
        forms.add(word + "es")
        if word.endswith("s") and not word.endswith("ss"):
            forms.add(word + "ses")
    elif word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
        forms.add(word[:-1] + "ies")
    elif word.endswith("o"):
        forms.update({word + "s", word + "es"})
    else:
        forms.add(word + "s")
    return forms


def lemma_table(vocabulary: Iterable[str]) -> dict[str, str]:
    """Map every word of `vocabulary` to itself and each of its plural forms to it.

    Multi-word entries contribute each of their words ("teddy bears" is singularised word by word before names are
    merged). A form that is itself a vocabulary word keeps mapping to itself ("skis" stays "skis", not "ski"); when
    two words generate the same form, the alphabetically first wins, so the table is deterministic.
    """
    words = sorted({part for entry in vocabulary for part in entry.split() if part})
    table = {word: word for word in words}
    for word in words:
        for form in sorted(plural_forms(word)):
            table.setdefault(form, word)
    return table
