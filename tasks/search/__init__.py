"""Cover search: the index of every cover embedded by the champion CLIP, the query engine, and the web page."""
