from __future__ import annotations

from pathlib import Path

import pytest

from tasks.inputs.readers import (
    InputFileError,
    decode_bytes,
    read_covers,
    read_listing,
    read_listings,
    title_book_id,
)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_amazon_listing_is_read_as_latin1_with_every_row(tmp_path: Path) -> None:
    rows = (
        '"0001","0001.jpg","http://x/1.jpg","Caf\xe9 Recipes","Jos\xe9 N\xfa\xf1ez","7","Cookbooks, Food & Wine"\n'
        '"0002","0002.jpg","http://x/2.jpg","Rick Steves Paris 2016","Rick Steves","29","Travel"\n'
        "\n"
        '"0003","0003.jpg","only four","fields"\n'
    ).encode("latin-1")
    frame = read_listing(write(tmp_path / "book32-listing.csv", rows))
    assert len(frame) == 3
    assert frame.loc[0, "title"] == "Café Recipes"
    assert frame.loc[0, "author"] == "José Núñez"
    assert frame.loc[1, "genre"] == "Travel"
    assert frame.loc[2, "parse_error"].startswith("wrong_column_count")
    assert frame["source_row"].tolist() == [1, 2, 4]


def test_amazon_listing_falls_back_to_category_id_when_the_name_is_empty(tmp_path: Path) -> None:
    frame = read_listing(write(tmp_path / "l.csv", b'"1","1.jpg","u","Title","A","29",""\n'))
    assert frame.loc[0, "genre"] == "Travel"


def test_category_title_table_gets_stable_ids_from_titles(tmp_path: Path) -> None:
    frame = read_listing(write(tmp_path / "t.csv", b"Category,Title\nTravel,Rick Steves Paris 2016\nRomance,Love\n"))
    assert frame["genre"].tolist() == ["Travel", "Romance"]
    assert frame.loc[0, "book_id"] == title_book_id("Rick Steves Paris 2016", None)
    assert frame["author"].isna().all()


def test_generic_listing_with_utf8_bom(tmp_path: Path) -> None:
    frame = read_listing(write(tmp_path / "g.csv", "\ufefftitle,author,category\nÉtude,Zoë,History\n".encode("utf-8")))
    assert frame.loc[0, "title"] == "Étude"
    assert frame.loc[0, "author"] == "Zoë"


def test_decode_prefers_utf8_and_never_fails() -> None:
    assert decode_bytes("é".encode("utf-8")).encoding == "utf-8"
    assert decode_bytes("é".encode("latin-1")).encoding == "latin-1"
    assert decode_bytes(b"\xff\xfe\x00garbage").text  # latin-1 decodes any byte


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"a;b;c\n1;2;3\n", "unknown listing layout"),
])
def test_unusable_listing_files_raise_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(InputFileError, match=message) as raised:
        read_listing(path)
    assert str(path) in str(raised.value)


def test_missing_listing_folder_and_no_matching_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="data.root"):
        read_listings(tmp_path / "nowhere", ["*.csv"])
    with pytest.raises(InputFileError, match="no listing file"):
        read_listings(tmp_path, ["*.csv"])


def test_bookdepository_paths_map_dataset_prefix_to_book_covers(tmp_path: Path) -> None:
    header = "image,name,author,format,book_depository_stars,price,currency,old_price,isbn,category,img_paths\n"
    row = "u,Dune,Frank Herbert,Paperback,4.5,9,$,10,9780441013593,Science-Fiction-Fantasy-Horror,dataset/Science-Fiction-Fantasy-Horror/0000001.jpg\n"
    frame, detected = read_covers(write(tmp_path / "book-covers.csv", (header + row).encode()))
    assert detected == "bookdepository"
    assert frame.loc[0, "image_ref"] == "book-covers/Science-Fiction-Fantasy-Horror/0000001.jpg"
    assert frame.loc[0, "image_root"] == str(tmp_path)
    assert frame.loc[0, "book_id"] == "9780441013593"


def test_generic_covers_need_title_and_image_columns(tmp_path: Path) -> None:
    frame, detected = read_covers(write(tmp_path / "covers.csv", b"title,author,image\nDune,Frank Herbert,img/dune.jpg\n"))
    assert detected == "generic"
    assert frame.loc[0, "book_id"] == title_book_id("Dune", "Frank Herbert")
    with pytest.raises(InputFileError, match="unknown cover-table layout"):
        read_covers(write(tmp_path / "other.csv", b"name,picture\nDune,x.jpg\n"))


def test_generic_covers_with_forced_format_and_missing_column(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="missing column"):
        read_covers(write(tmp_path / "c.csv", b"title,author\nDune,Frank\n"), "generic")


def test_listing_format_can_be_forced(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", b"title,category\nDune,Science Fiction & Fantasy\n")
    assert read_listing(path, "generic").loc[0, "genre"] == "Science Fiction & Fantasy"
    forced = read_listing(path, "amazon")  # the user said book32: a 2-field row is a parse error, not a guess
    assert forced["parse_error"].str.startswith("wrong_column_count").all()
