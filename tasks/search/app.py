"""The cover search page: type a title, see its predicted genre and its covers; upload a cover,
see what it reads, the book it names ("this looks like ..."), its genre and the closest titles,
each result with why it was found (read text, CLIP, both). FastAPI, one HTML page, JSON behind it.

Covers are served by index row, never by a path the browser sends, so the page cannot be used to
read other files. Bad input (empty, huge, not an image) gets a 400 with a sentence the page shows.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from tasks.platform.settings import SearchSettings
from tasks.search.engine import MAX_UPLOAD_BYTES, CoverSearch, Hit, SearchInputError
from tasks.search.queries import parse_labels
from tasks.search.zero_shot import ZeroShotLabels

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Book cover search</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 72rem; }
 form { margin-bottom: 1rem; } input[type=text] { width: 28rem; padding: .3rem; }
 #results { display: flex; flex-wrap: wrap; gap: 1rem; } figure { width: 10rem; margin: 0; }
 figure img { width: 10rem; height: 14rem; object-fit: cover; border: 1px solid #ccc; }
 figcaption { font-size: .8rem; } .error { color: #b00; } #genre { font-weight: bold; } .guess { color: #a60; }
 #uploaded img { border: 3px solid #36c; } #identified { font-size: 1.2rem; font-weight: bold; color: #063; }
 .read { color: #555; font-style: italic; }
</style></head>
<body>
<h1>Book cover search</h1>
<form id="by-title">
  <input type="text" id="title" name="title" placeholder="A book title, e.g. Rick Steves Paris 2016">
  <select id="genre-choice"><option value="">genre: predicted</option></select>
  <input type="number" id="k" value="5" min="1" max="50" style="width:4rem">
  <button type="submit" id="search">Search</button>
</form>
<form id="by-cover"><input type="file" id="cover" accept="image/*">
  <input type="text" id="labels" placeholder="or your own labels: Romance, Travel, Cookbooks" style="width:20rem">
  <button type="submit" id="classify">What genre is this cover?</button></form>
<p id="message" class="error"></p>
<p id="identified"></p>
<p id="read" class="read"></p>
<p id="genre"></p>
<div id="results"></div>
<script>
const $ = (id) => document.getElementById(id);
fetch("/api/genres").then(r => r.json()).then(genres => genres.forEach(g => {
  const option = document.createElement("option"); option.value = g; option.textContent = g; $("genre-choice").appendChild(option);
}));
function show(hits, withImages, uploaded) {
  $("results").innerHTML = "";
  if (uploaded) {  // the cover the user sent, first, so the closest titles read against it
    const figure = document.createElement("figure"); figure.id = "uploaded";
    const img = document.createElement("img"); img.src = URL.createObjectURL(uploaded); img.alt = "your cover"; figure.appendChild(img);
    const caption = document.createElement("figcaption"); caption.textContent = "your cover: " + uploaded.name; figure.appendChild(caption);
    $("results").appendChild(figure);
  }
  hits.forEach(hit => {
    const figure = document.createElement("figure");
    if (withImages) { const img = document.createElement("img"); img.src = "/cover/" + hit.row; img.alt = hit.title; img.className = "cover"; figure.appendChild(img); }
    const caption = document.createElement("figcaption");
    caption.textContent = hit.title + " — " + hit.author + " (" + hit.genre + ", " + hit.score.toFixed(3) + "; found by " + hit.matched + ")";
    figure.appendChild(caption); $("results").appendChild(figure);
  });
}
async function answer(response) {
  const body = await response.json();
  if (!response.ok) { $("message").textContent = body.error; $("genre").textContent = ""; $("results").innerHTML = ""; return null; }
  $("message").textContent = ""; return body;
}
$("by-title").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = new URLSearchParams({title: $("title").value, genre: $("genre-choice").value, k: $("k").value});
  const body = await answer(await fetch("/api/search?" + query));
  if (!body) return;
  $("genre").textContent = "Genre: " + body.genre + (body.genre_probability === null ? " (chosen)" : " (predicted, p = " + body.genre_probability.toFixed(2) + ")")
    + (body.low_confidence ? " — low confidence: a guess; choose a genre to search within it" : "");
  $("genre").className = body.low_confidence ? "guess" : "";
  $("identified").textContent = ""; $("read").textContent = "";
  show(body.hits, true);
});
$("by-cover").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("cover").files[0];
  if (!file) { $("message").textContent = "choose a cover image first"; return; }
  const query = new URLSearchParams({k: $("k").value, labels: $("labels").value});
  const body = await answer(await fetch("/api/cover?" + query, {method: "POST", body: file}));
  if (!body) return;
  $("genre").textContent = (body.own_labels ? "Your labels: " : "Genre: ") + body.genres.map(([g, p]) => g + " " + p.toFixed(2)).join(", ")
    + (body.low_confidence && !body.own_labels ? " — low confidence: a guess" : "");
  $("genre").className = body.low_confidence && !body.own_labels ? "guess" : "";
  const named = body.identified;
  $("identified").textContent = named ? "This looks like " + named.title + " by " + (named.author || "an unknown author")
    + " (its genre: " + named.genre + ")" : "";
  $("read").textContent = body.read_text === null ? "" : body.read_text ? "Read on the cover: " + body.read_text : "No text could be read on the cover.";
  show(body.hits, true, file);
});
</script>
</body></html>
"""


def _hits(hits: list[Hit]) -> list[dict[str, object]]:
    return [asdict(hit) for hit in hits]


def create_app(search: CoverSearch, labels: ZeroShotLabels | None = None) -> FastAPI:
    """The page over a loaded search; `labels` scores the user's own labels with the same CLIP as `search` (the
    upload is embedded once, by the search)."""
    app = FastAPI(title="Book cover search")
    labels_scorer = labels or ZeroShotLabels(search.bundle, SearchSettings().label_prompt_template)

    @app.exception_handler(SearchInputError)
    async def refused(_: Request, error: SearchInputError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/genres")
    def genres() -> list[str]:
        return list(search.genres)

    @app.get("/api/search")
    def by_title(title: str = "", genre: str = "", k: int = 5) -> dict[str, object]:
        result = search.by_title(title, genre or None, k)
        return {"query": result.query, "genre": result.genre, "genre_probability": result.genre_probability,
                "low_confidence": result.low_confidence, "hits": _hits(result.hits)}

    @app.post("/api/cover")
    async def by_cover(request: Request, k: int = 5, labels: str = "") -> dict[str, object]:
        data = await request.body()
        if len(data) > MAX_UPLOAD_BYTES:
            raise SearchInputError(f"the file is over {MAX_UPLOAD_BYTES // 2**20} MiB; upload a smaller cover")
        own = parse_labels(labels) if labels.strip() else None
        result = search.by_cover(data, k)
        genres = labels_scorer.score_embedding(result.embedding, own) if own else result.genres
        return {"genres": genres, "own_labels": own is not None, "hits": _hits(result.hits), "read_text": result.read_text,
                "identified": asdict(result.identified) if result.identified else None, "low_confidence": result.low_confidence}

    @app.get("/cover/{row}")
    def cover(row: int) -> FileResponse:
        return FileResponse(search.cover_path(row))

    return app
