"""The book's colour-blind-safe colours (no imports: architecture files and plotting both read them).

Okabe and Ito's eight colours, yellow left out of the architectures (hard to see on white), and olive from Paul Tol's
"muted" scheme for the eighth architecture."""

OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
TOL_OLIVE = "#999933"
FALLBACK_GREY = "#777777"
"""The colour of an architecture registered without one."""
