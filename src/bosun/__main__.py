from bosun.cli.main import app

app(prog_name="bosun")
