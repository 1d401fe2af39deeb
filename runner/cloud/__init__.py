"""The runner in AWS: the container's ``job`` entrypoint, alerts and the daily report, Batch and SageMaker
submissions, EventBridge Scheduler schedules.

    aws         boto3 clients built from the settings (endpoint ``AWS_ENDPOINT_URL``)
    alerts      the SNS message of a failed run, the daily report and its CloudWatch metrics
    job         ``python -m runner job NOTEBOOK|PIPELINE``: run, tell, exit with the outcome
    jobspec     what a job needs: its job definition group, command, environment and secrets
    batch       register the job definition, submit, follow (AWS Batch)
    sagemaker   the same run as a SageMaker Processing job
    schedules   the daily and weekly schedules (EventBridge Scheduler -> Batch SubmitJob)
    submit      ``submit`` and ``schedule``: the API calls planned, checked, made
    operate     ``status``, ``logs``, ``rerun`` and ``cancel`` of a submitted run
    cli         the ``job``, ``submit``, ``status``, ``logs``, ``rerun``, ``cancel`` and ``schedule`` commands

Importing it does nothing; boto3 loads on first use.
"""
