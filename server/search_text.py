"""A job's search text (the job monitor's `q`): the one definition of what it is made of.

submissions._create_jobs writes it; the job monitor's search by parts (api/jobs._by_words) relies on
it: a term without a space lies inside one of the parts, so it matches the jobs of the requests,
users and sites whose words contain it, or of the runnums that do.
"""
SEARCH_TEXT_MAX = 1024   # the column's length: a longer text is cut
RUNNUM_DIGITS = 20       # a BIGINT's, with its sign


def request_words(production, parameters):
    """A request's part of its jobs' texts: its production's name and its parameter values, lower-cased."""
    return " ".join([production] + [str(v) for v in parameters.values()]).lower()


def job_text(production, user, parameters, site, runnum):
    """A job's search text: production name, user name ("" for none), parameter values, site name and
    runnum, joined by spaces, lower-cased, cut at SEARCH_TEXT_MAX characters."""
    parts = [production, user or ""] + [str(v) for v in parameters.values()] + [site, str(runnum)]
    return " ".join(parts).lower()[:SEARCH_TEXT_MAX]


def may_be_cut(words, user_chars, site_chars):
    """Whether a job text with these request words (request_words), a user and a site name of up to
    these lengths (lower-cased) and any runnum may have been cut."""
    return len(words) + user_chars + site_chars + RUNNUM_DIGITS + 3 > SEARCH_TEXT_MAX   # 3 spaces
