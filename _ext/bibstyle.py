"""Bibliography labels in the text's author-year style ("Ba et al., 2016"),
not alpha ("BKH16")."""
from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _names(entry):
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(person.last_names) for person in people]
    if len(last) == 1:
        return last[0]
    if len(last) == 2:
        return f"{last[0]} and {last[1]}"
    return f"{last[0]} et al."


class AuthorYearLabels(BaseLabelStyle):
    """The label the text's {cite:p} prints, so a reader finds
    "[Ba et al., 2016]" in the list."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [f"{_names(e)}, {e.fields.get('year', 'n.d.')}"
                  for e in entries]
        for label in labels:  # same authors, same year: 2016a, 2016b
            if labels.count(label) > 1:
                raise ValueError(f"two references share the label {label!r}")
        return iter(labels)


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "author_year_labels"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "author_year_labels",
                    AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True}
