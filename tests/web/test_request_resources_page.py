"""The requests page's cores and memory fields: labelled, sent with the create form, shown when modifying."""
from .test_productions_page import form, manager, submit, text
from .test_requests_page import BASE, PARAMS

CORES, MEMORY = "Cores per job", "Memory per job (MB, 0: the batch system's default)"


def test_a_request_made_on_the_page_carries_cores_and_memory(client, data):
    api = manager(client)
    r = submit(client, "/requests?production=2010_July", "Create request", {
        **PARAMS, "Generator": "MultiCore", "Output directory LFN": f"{BASE}/2010_July/output/MultiCore",
        CORES: "8", MEMORY: "16000"})
    assert r.status_code == 302, text(r)[-400:]
    req = api.get(f"/requests/{r.location.rsplit('/', 1)[1]}").json
    assert (req["cores"], req["memory_mb"]) == (8, 16000)
    page = client.get(r.location).get_data(as_text=True)
    assert form(page, "modify-request").control(CORES)["value"] == "8"


def test_a_bad_core_count_is_refused_on_the_page(client, data):
    manager(client)
    r = submit(client, "/requests?production=2010_July", "Create request", {
        **PARAMS, "Generator": "ZeroCores", "Output directory LFN": f"{BASE}/2010_July/output/ZeroCores",
        CORES: "0"})
    assert r.status_code != 302 and "cores" in text(r)
