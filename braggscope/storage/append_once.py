"""Table rows appended once, even when the catalog server dies between storing them and answering.

bluesky-tiled-plugins' run writer appends each batch of events to the run's
table and, when the request fails in transit, sends it again ("forcing a
retry ... the rows may be duplicated"). A server killed after its database
commit and before its answer (a SIGKILL, an OOM kill, a host reset) has stored
the batch: the retry then writes it twice, and the run's table holds more rows
than events (seen as 290 rows for 240 events). :func:`append_with_retry` asks
the server, before every retry, whether the batch's first ``seq_num`` is
already in the table; the question costs one read of the ``seq_num`` column,
and only after a failed append.
"""

from __future__ import annotations

import logging

import httpx
from tiled.client.utils import retry_context

__all__ = ["append_with_retry"]

logger = logging.getLogger(__name__)


def append_with_retry(run_writer, df_client, table, desc_name: str) -> None:
    """``_RunWriter._append_with_retry`` that never appends a batch the server already stored.

    Parameters
    ----------
    run_writer : bluesky_tiled_plugins.writing.tiled_writer._RunWriter
        The run writer (its ``notes`` record a batch found stored).
    df_client : tiled.client.dataframe.DataFrameClient
        The run's table of stream ``desc_name``.
    table : pyarrow.Table
        The batch, with its ``seq_num`` column.
    desc_name : str
        Stream name (for the messages).
    """
    try:
        df_client.append_partition(0, table)
        return
    except (httpx.TransportError, httpx.HTTPStatusError) as err:
        if isinstance(err, httpx.HTTPStatusError) and err.response.status_code < 500 \
                and err.response.status_code != 429:
            raise  # a client error: a retry would fail again
        first = int(table["seq_num"][0].as_py())
        logger.warning("appending %d rows (seq_num %d...) to the table of stream %r failed with %r; retrying "
                       "unless the server stored them", table.num_rows, first, desc_name, err)
    for attempt in retry_context():
        with attempt:
            if _stored(df_client, first):
                run_writer.notes.append(f"rows from seq_num {first} of stream {desc_name!r} were stored by a "
                                        "request whose answer was lost: not appended again")
                return
            df_client.append_partition(0, table)


def _stored(df_client, seq_num: int) -> bool:
    """Whether the server's table holds the row ``seq_num`` (its ``seq_num`` column read)."""
    column = df_client.read(["seq_num"])["seq_num"]
    return bool((column == seq_num).any())
