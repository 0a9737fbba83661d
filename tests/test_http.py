"""Outbound sessions: streamed transfers run on threads the process shares."""
import threading

from chatgpt_web.config import Config
from chatgpt_web.http import new_session


def test_sessions_share_one_pool_of_transfer_threads():
    config = Config.from_env({})
    with new_session(config) as one, new_session(config, resolve=["a:443:127.0.0.1"]) as two:
        assert one.executor is two.executor


def test_a_streamed_response_is_read_on_a_shared_transfer_thread(emulator):
    readers = []
    config = Config.from_env({})
    for _ in range(3):
        with new_session(config) as session:
            response = session.get(emulator.url + "/", stream=True)
            readers.append(response.stream_task)
            assert response.status_code == 200
            b"".join(response.iter_content())
            response.close()
    names = {thread.name for thread in threading.enumerate()}
    assert any(name.startswith("curl-transfer") for name in names)
    assert all(task.done() for task in readers)
